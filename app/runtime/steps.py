"""One call's session steps, taken where the event arrives and carried out in decision order.

A step is ``session.handle(event)`` and then its actions. Most events go through the call's
mailbox to its main loop, but the two that come by the hundred a second do not: a caller frame
is handled in the socket reader's task and a synthesised chunk in the speaker's task, so a
frame costs no wake of the main loop and agent audio leaves without a round trip through it.

The session decides in the order ``handle`` is called; the actions must reach the line in that
same order. Whoever holds ``lock`` handles and executes; a caller frame never waits for it
(the socket must keep being read): when the lock is held, or earlier actions are still queued,
its actions are queued behind them (``Posted``, ahead of unhandled events, whose decisions
come later). A step whose actions reach beyond the line (cancelling speech, starting the model,
ending the call) is always queued for the main loop, which owns those tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app.core.events import Action, Clear, Emit, Event, PlayAudio, PlayMark
from app.core.session import Session
from app.runtime.mailbox import Mailbox

# Actions any task may carry out: they only touch the line and the records.
LINE_ACTIONS = (PlayAudio, PlayMark, Clear, Emit)


@dataclass(frozen=True, slots=True)
class Posted:
    """Actions decided outside the main loop, for it to carry out in their turn."""

    actions: list[Action]


class Steps:
    def __init__(
        self,
        session: Session,
        execute: Callable[[list[Action]], Awaitable[None]],
        mailbox: Mailbox,
        now: Callable[[], float],
        on_step: Callable[[], None],
    ) -> None:
        self.session = session
        self.execute = execute
        self.mailbox = mailbox
        self.now = now
        self.on_step = on_step  # after every step: the loop's bookkeeping (quiet, ...)
        self.lock = asyncio.Lock()
        # While the main loop waits: until when (inf: no deadline); None while it works.
        self.waiting_until: float | None = None
        self._posted = 0  # Posted batches not yet carried out

    def frame(self, ev: Event) -> Awaitable[None] | None:
        """A caller frame: handled now. Returns the execution to await when the actions may be
        carried out here, else None (nothing to do, or queued for the main loop)."""
        actions = self.session.handle(ev, self.now())
        if not actions:
            self._after_decision()
            return None
        if self.lock.locked() or not self._inline(actions):
            self._post(actions)
            return None
        return self._run(actions)

    async def in_turn(self, ev: Event) -> None:
        """A synthesised chunk: waits its turn (backpressure on the TTS stream), then handled
        and, where it may, carried out here."""
        async with self.lock:
            actions = self.session.handle(ev, self.now())
            if actions and self._inline(actions):
                await self.execute(actions)
            elif actions:
                self._post(actions)
            self._after_decision()

    async def loop_step(self, ev: Event | Posted) -> None:
        """The main loop's step: an event from the mailbox, or actions posted earlier."""
        async with self.lock:
            if isinstance(ev, Posted):
                self._posted -= 1
                await self.execute(ev.actions)
            else:
                await self.execute(self.session.handle(ev, self.now()))
            self.on_step()

    def _inline(self, actions: list[Action]) -> bool:
        return self._posted == 0 and all(isinstance(a, LINE_ACTIONS) for a in actions)

    async def _run(self, actions: list[Action]) -> None:
        async with self.lock:  # free (checked just before, no await between): taken at once
            await self.execute(actions)
            self._after_decision()

    def _post(self, actions: list[Action]) -> None:
        self._posted += 1
        self.mailbox.post(Posted(actions))  # type: ignore[arg-type]
        self._after_decision()

    def _after_decision(self) -> None:
        """A decision made outside the loop may bring a deadline (a turn's endpoint) forward:
        wake the loop so it waits for the new one."""
        self.on_step()
        if self.session.ended:
            self.mailbox.wake()
            return
        deadline = self.session.next_deadline()
        waiting = self.waiting_until
        if deadline is not None and waiting is not None and deadline < waiting:
            self.mailbox.wake()
