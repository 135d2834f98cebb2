"""The drain logic on its own: calls that end in time are left alone, the rest say goodbye."""

from __future__ import annotations

import asyncio

from app.core.providers import CallInfo
from app.runtime.context import CallRegistry
from app.runtime.drain import SHUTDOWN_REASON, Drainer


class FakeRunner:
    """Stands in for a CallRunner: ends by itself after ``natural_s``, or ``goodbye_s`` after
    ``shutdown`` (the goodbye playing out); unregisters itself like ``AppContext.run_call``."""

    def __init__(self, calls: CallRegistry, call_id: str, natural_s: float, goodbye_s: float = 0.05,
                 broken: bool = False) -> None:
        self.calls = calls
        self.call = CallInfo(call_id, "twilio")
        self.natural_s = natural_s
        self.goodbye_s = goodbye_s
        self.broken = broken
        self.shutdown_reasons: list[str] = []
        self.ended_by: str | None = None
        self._shutdown = asyncio.Event()
        calls.add(self.call, self)

    def shutdown(self, reason: str) -> None:
        self.shutdown_reasons.append(reason)
        if self.broken:
            raise RuntimeError("runner already torn down")
        self._shutdown.set()

    async def run(self) -> None:
        try:
            async with asyncio.timeout(self.natural_s):
                await self._shutdown.wait()
            await asyncio.sleep(self.goodbye_s)
            self.ended_by = "goodbye"
        except TimeoutError:
            self.ended_by = "natural"
        finally:
            self.calls.remove(self.call.call_id)


async def test_calls_finishing_before_the_deadline_are_left_alone() -> None:
    calls = CallRegistry(max_calls=5)
    runners = [FakeRunner(calls, f"c{i}", natural_s=0.05 * (i + 1)) for i in range(3)]
    tasks = [asyncio.create_task(r.run()) for r in runners]
    done_flags: list[bool] = []
    drainer = Drainer(calls, timeout_s=2.0, grace_s=1.0, on_done=lambda: done_flags.append(True))
    drainer.begin("SIGTERM")
    assert calls.draining and not calls.can_admit()
    await asyncio.wait_for(drainer.done.wait(), 3)
    await asyncio.gather(*tasks)
    assert [r.ended_by for r in runners] == ["natural"] * 3
    assert all(r.shutdown_reasons == [] for r in runners)
    assert (drainer.ended_naturally, drainer.told_goodbye, drainer.left_over) == (3, 0, 0)
    assert done_flags == [True]


async def test_calls_past_the_deadline_are_told_goodbye() -> None:
    calls = CallRegistry(max_calls=5)
    quick = FakeRunner(calls, "quick", natural_s=0.05)
    slow = FakeRunner(calls, "slow", natural_s=60)
    broken = FakeRunner(calls, "broken", natural_s=60, broken=True)
    tasks = [asyncio.create_task(r.run()) for r in (quick, slow, broken)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    drainer = Drainer(calls, timeout_s=0.3, grace_s=0.3)
    drainer.begin("SIGTERM")
    drainer.begin("SIGINT")  # a second signal does not start a second drain
    await asyncio.wait_for(drainer.done.wait(), 3)
    elapsed = loop.time() - started
    assert quick.ended_by == "natural" and quick.shutdown_reasons == []
    assert slow.ended_by == "goodbye" and slow.shutdown_reasons == [SHUTDOWN_REASON]
    # the broken runner's error did not keep the others from being told
    assert broken.shutdown_reasons == [SHUTDOWN_REASON]
    assert (drainer.ended_naturally, drainer.told_goodbye, drainer.left_over) == (1, 2, 1)
    assert 0.3 + 0.3 <= elapsed < 1.5  # deadline, then the grace ran out for the broken one
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_an_idle_server_drains_at_once() -> None:
    calls = CallRegistry(max_calls=5)
    drainer = Drainer(calls, timeout_s=30, grace_s=30)
    drainer.begin("SIGTERM")
    await asyncio.wait_for(drainer.done.wait(), 1)
    assert drainer.ended_naturally == 0
