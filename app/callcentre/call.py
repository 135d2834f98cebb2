"""One call with call-centre features: its agent profile, tools, keypad fields, recording,
transfer on hang-up, and the post-call job.

``CentreRunner`` wraps the core ``CallRunner`` with the same transport-facing API; the
transport never knows. ``CentreSink`` wraps the transport's sink so that when the session ends
the call with ``transfer_call`` (after the hand-off line has played), the call is redirected
to a human instead of being hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.agents.config import Agent
from app.callcentre.digits import DigitCollector, FieldRequest
from app.core.audio import AudioChunk
from app.core.providers import CallInfo, Message, ToolCall
from app.logs import bind_call, event, get_logger

if TYPE_CHECKING:
    from app.callcentre.service import CallCentre

log = get_logger(__name__)


@dataclass(slots=True)
class TransferRequest:
    reason: str = ""
    summary: str = ""


@dataclass(slots=True)
class CallFeatures:
    """What the call-centre layer knows about one live call."""

    call: CallInfo
    agent_name: str
    agent: Agent | None
    collector: DigitCollector = field(default_factory=DigitCollector)
    transfer: TransferRequest | None = None
    transfer_result: str | None = None  # "transferred" | "transfer_failed"
    handed_over: bool = False  # the stream is being replaced (keys pressed); the call goes on
    recording_sid: str | None = None
    fields: dict[str, str] = field(default_factory=dict)  # collected keypad fields, by name
    runner: Any = None


class CentreSink:
    """The transport's sink, except that ending a call by ``transfer_call`` transfers it."""

    def __init__(self, inner: Any, centre: CallCentre, features: CallFeatures) -> None:
        self._inner = inner
        self._centre = centre
        self._features = features
        self.format = inner.format

    async def send_audio(self, chunk: AudioChunk) -> None:
        await self._inner.send_audio(chunk)

    async def send_mark(self, name: str) -> None:
        await self._inner.send_mark(name)

    async def clear(self) -> None:
        await self._inner.clear()

    async def hangup(self, reason: str) -> None:
        f = self._features
        if reason == "transfer_call" or f.transfer is not None:
            if await self._centre.transfer(f):
                return  # Twilio runs the new TwiML; the stream ends on its side
        await self._inner.hangup(reason)


class CentreRunner:
    """``CallRunner``'s transport API, plus keypad fields, recording and the post-call job."""

    def __init__(self, inner: Any, centre: CallCentre, features: CallFeatures) -> None:
        self.inner = inner
        self.centre = centre
        self.features = features
        features.runner = self
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.Task[Any] | None = None
        self._progress = asyncio.Event()

    def __getattr__(self, name: str) -> Any:  # transcript, turns, ended, session, ...
        return getattr(self.inner, name)

    async def run(self) -> None:
        f = self.features
        self.centre.live[f.call.call_id] = f
        try:
            with bind_call(f.call.call_id):
                if f.agent is not None and f.agent.recording.enabled:
                    self.spawn(self.centre.start_recording(f))
                await self.inner.run()
        finally:
            if self.centre.live.get(f.call.call_id) is f:
                del self.centre.live[f.call.call_id]
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if not f.handed_over:
                self.centre.call_finished(f, self.inner)

    async def caller_audio(self, chunk: AudioChunk) -> None:
        await self.inner.caller_audio(chunk)

    def mark_reached(self, name: str) -> None:
        self.inner.mark_reached(name)
        self._progress.set()

    def remote_hangup(self, reason: str = "caller hung up") -> None:
        self.inner.remote_hangup(reason)

    def shutdown(self, reason: str = "server shutting down") -> None:
        self.inner.shutdown(reason)

    # ------------------------------------------------------------ keypad fields

    def dtmf(self, digit: str) -> None:
        collector = self.features.collector
        if not collector.active:
            self.inner.dtmf(digit)
            return
        result = collector.feed(digit, self._now())
        if result is None:
            self._arm_timer()
        else:
            self._release(result)

    def collect(self, request: FieldRequest) -> None:
        self.features.collector.start(request, self._now())
        self._arm_timer()
        event(log, "digits_collecting", field=request.name[:40], max_digits=request.max_digits)

    def _release(self, result: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # Only the field's name and length are logged: the digits may be an account number.
        event(log, "digits_collected", field=result.name[:40], length=len(result.digits),
              ended_by=result.ended_by)  # fmt: skip
        if result.digits:
            self.features.fields[result.name] = result.digits
        for key in result.keys():
            self.inner.dtmf(key)

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        deadline = self.features.collector.deadline
        if deadline is not None:
            self._timer = self.spawn(self._expire_at(deadline))

    async def _expire_at(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - self._now()))
        result = self.features.collector.expire(self._now())
        if result is not None:
            self._timer = None
            self._release(result)

    # ------------------------------------------------------------ helpers

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def history(self) -> list[Message]:
        return list(self.inner.session.history)

    async def wait_quiet(self, within: float) -> None:
        """Until the agent has finished speaking (its marks came back), up to ``within`` s."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while self.inner.session.agent_active and not self.inner.ended:
            left = end - loop.time()
            if left <= 0:
                return
            self._progress.clear()
            # Marks wake us; the short cap covers a turn that ends without speech.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.25)):
                    await self._progress.wait()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


def tool_argument(call: ToolCall, name: str, default: Any = None) -> Any:
    args = call.arguments if isinstance(call.arguments, Mapping) else {}
    value = args.get(name)
    return default if value is None else value


def log_failure(what: str, exc: BaseException) -> None:
    event(log, what, logging.ERROR, error=type(exc).__name__, detail=str(exc)[:120])

