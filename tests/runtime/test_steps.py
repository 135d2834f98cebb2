"""Steps taken outside the main loop reach the line in the order the session decided them.

The session here is a recording stand-in for ``Session``'s step interface (``handle``,
``next_deadline``, ``ended``, ``agent_active``): what is under test is only where and in which
order ``Steps`` carries the decided actions out. The real session runs these paths in every
call test (``tests/transports``, ``tests/e2e``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from app.core.audio import MULAW_8K, AudioChunk
from app.core.events import CallerAudio, CancelSpeech, Clear, PlayAudio, PlayMark, TtsAudio
from app.runtime.mailbox import Mailbox
from app.runtime.steps import Posted, Steps

FRAME = AudioChunk(b"\xff" * 160, MULAW_8K)


class Decisions:
    """Answers each ``handle`` with the next planned action list; notes the order."""

    def __init__(self, *plans: list[Any]) -> None:
        self.plans = list(plans)
        self.handled: list[Any] = []
        self.ended = False
        self.agent_active = True
        self.deadline: float | None = None

    def handle(self, ev: Any, now: float) -> list[Any]:
        self.handled.append(ev)
        return self.plans.pop(0) if self.plans else []

    def next_deadline(self) -> float | None:
        return self.deadline


class Line:
    """Carries actions out; each takes a loop turn, as a socket write may."""

    def __init__(self) -> None:
        self.done: list[Any] = []

    async def execute(self, actions: list[Any]) -> None:
        for action in actions:
            await asyncio.sleep(0)
            self.done.append(action)


def make(*plans: list[Any]) -> tuple[Steps, Decisions, Line, Mailbox]:
    session, line, mailbox = Decisions(*plans), Line(), Mailbox(maxsize=8)
    steps = Steps(session, line.execute, mailbox, lambda: 100.0, lambda: None)  # type: ignore[arg-type]
    return steps, session, line, mailbox


async def frame(steps: Steps) -> None:
    run: Awaitable[None] | None = steps.frame(CallerAudio(FRAME))
    if run is not None:
        await run


async def test_a_quiet_frame_costs_no_action_and_no_wake() -> None:
    steps, session, line, mailbox = make([])
    await frame(steps)
    assert session.handled and line.done == [] and mailbox.pop() is None


async def test_line_actions_go_out_from_the_frames_own_task() -> None:
    clear, mark = Clear(), PlayMark("m1")
    steps, _, line, mailbox = make([clear, mark])
    await frame(steps)
    assert line.done == [clear, mark]
    assert mailbox.pop() is None  # the main loop was never involved


async def test_while_the_loop_works_a_frames_actions_follow_its_batch_in_order() -> None:
    a1, a2 = PlayAudio(FRAME), PlayAudio(FRAME)
    barge = Clear()
    later = PlayMark("after")
    steps, _, line, mailbox = make([a1, a2], [barge], [later])
    looping = asyncio.create_task(steps.loop_step(TtsAudio(1, FRAME)))  # decides [a1, a2]
    await asyncio.sleep(0)  # the loop holds the lock, mid-batch
    await frame(steps)  # decided now, while a1/a2 are going out: queued behind them
    await frame(steps)  # a later frame must not overtake the queued one, even with the lock free
    await looping
    assert line.done == [a1, a2]
    queued = [mailbox.pop(), mailbox.pop()]
    assert all(isinstance(q, Posted) for q in queued)
    for q in queued:
        await steps.loop_step(q)  # type: ignore[arg-type]
    assert line.done == [a1, a2, barge, later]
    await frame(steps)  # nothing queued any more: frames act on their own again
    assert mailbox.pop() is None


async def test_actions_beyond_the_line_are_left_to_the_main_loop() -> None:
    cancel = CancelSpeech()
    steps, _, line, mailbox = make([Clear(), cancel])
    await frame(steps)
    assert line.done == []  # not even the Clear: the batch stays whole and in order
    queued = mailbox.pop()
    assert isinstance(queued, Posted) and queued.actions[1] is cancel


async def test_a_synthesised_chunk_waits_its_turn_behind_the_loop() -> None:
    first, chunk = PlayAudio(FRAME), PlayAudio(FRAME)
    steps, session, line, _ = make([first], [chunk])
    looping = asyncio.create_task(steps.loop_step(TtsAudio(1, FRAME)))
    await asyncio.sleep(0)
    await steps.in_turn(TtsAudio(1, FRAME))
    await looping
    assert line.done == [first, chunk]
    assert len(session.handled) == 2


async def test_a_deadline_brought_forward_wakes_the_waiting_loop() -> None:
    steps, session, _, mailbox = make([], [])
    steps.waiting_until = 200.0  # the loop sleeps until its next timer at t=200
    waiter = asyncio.create_task(mailbox.wait(10.0))
    await asyncio.sleep(0)
    session.deadline = 250.0  # later than what it waits for: no wake
    await frame(steps)
    await asyncio.sleep(0.01)
    assert not waiter.done()
    session.deadline = 150.0  # sooner: the loop must recompute its wait
    await frame(steps)
    assert await asyncio.wait_for(waiter, 1.0) is True
