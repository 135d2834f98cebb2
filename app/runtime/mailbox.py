"""The call session's inbox: provider events in order and bounded, control events first."""

from __future__ import annotations

import asyncio
import collections

from app.core.events import Event


class Mailbox:
    """The session's inbox. Events from providers (caller audio, transcripts, model text and
    its end, synthesised audio and its end) keep their order, are bounded, and ``put`` waits
    when full. Control events from the transport or the server (marks, digits, hang-up,
    shutdown) jump the queue and are never dropped — there are only a few per utterance.
    One future per wait, so an idle call costs nothing between frames."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: collections.deque[Event] = collections.deque()
        self._control: collections.deque[Event] = collections.deque()
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    async def put(self, ev: Event) -> None:
        while len(self._data) >= self.maxsize:
            self._space.clear()
            await self._space.wait()
        self._data.append(ev)
        self._wake.set()

    def post(self, ev: Event) -> None:
        self._control.append(ev)
        self._wake.set()

    def wake(self) -> None:
        """Wake the waiter with nothing new (its deadline moved)."""
        self._wake.set()

    def pop(self) -> Event | None:
        if self._control:
            return self._control.popleft()
        if self._data:
            ev = self._data.popleft()
            if len(self._data) < self.maxsize:
                self._space.set()
            return ev
        return None

    async def wait(self, within: float | None) -> bool:
        """Wait for something to arrive; False on timeout."""
        self._wake.clear()
        if self._control or self._data:
            return True
        try:
            async with asyncio.timeout(within):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True
