"""One call with call-centre features: its agent profile, tools, keypad fields, recording,
transfer on hang-up, and the post-call job.

The call runs on the core ``CallRunner`` with hooks (``app.runtime.hooks``): the tools, the
keypad while a field is collected (``KeypadFields``), a recording started beside the session
and the post-call job when it is over. ``CentreSink`` wraps the transport's sink so that when
the session ends the call with ``transfer_call`` (after the hand-off line has played), the call
is redirected to a human instead of being hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.agents.config import Agent
from app.callcentre.digits import DigitCollector, FieldRequest
from app.core.audio import AudioChunk
from app.core.providers import CallInfo, ToolCall
from app.core.records import CallEvent
from app.logs import event, get_logger

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
    # What the agent recorded with set_outcome during the call: it outranks what the post-call
    # extraction would guess from the transcript.
    agent_outcome: tuple[str, str | None] | None = None
    handed_over: bool = False  # the stream is being replaced (keys pressed); the call goes on
    recording_sid: str | None = None
    fields: dict[str, str] = field(default_factory=dict)  # collected keypad fields, by name
    runner: Any = None  # the call's CallRunner, once made
    keypad: KeypadFields | None = None


class Transferrer(Protocol):
    """What the sink needs of the call centre: move a call to a human (False: it could not)."""

    async def transfer(self, f: CallFeatures) -> bool: ...


class CentreSink:
    """The transport's sink, except that ending a call by ``transfer_call`` transfers it."""

    def __init__(self, inner: Any, centre: Transferrer, features: CallFeatures) -> None:
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


class KeypadFields:
    """A field the model asked for (``collect_digits``): the caller's keys go here until ``#``,
    its length or a pause, then reach the session as one entry. The runner's keypad hook."""

    def __init__(self, features: CallFeatures) -> None:
        self.features = features
        self._timer: asyncio.Task[Any] | None = None

    def take(self, digit: str) -> bool:
        collector = self.features.collector
        if not collector.active:
            return False
        result = collector.feed(digit, self._now())
        if result is None:
            self._arm_timer()
        else:
            self._release(result)
        return True

    def collect(self, request: FieldRequest) -> None:
        self.features.collector.start(request, self._now())
        self._arm_timer()
        event(log, "digits_collecting", field=request.name[:40], max_digits=request.max_digits)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _release(self, result: Any) -> None:
        self.close()
        # Only the field's name and length are logged: the digits may be an account number.
        event(log, "digits_collected", field=result.name[:40], length=len(result.digits),
              ended_by=result.ended_by)  # fmt: skip
        runner = self.features.runner
        if result.digits:
            self.features.fields[result.name] = result.digits
            if runner is not None:  # its name on the record (never the digits): a call that
                # goes on elsewhere after a crash still knows which fields it has
                runner.note(CallEvent("keypad_field", self._now(), {"name": result.name[:40]}))
        if runner is not None:
            runner.keys("".join(result.keys()))

    def _arm_timer(self) -> None:
        self.close()
        deadline = self.features.collector.deadline
        if deadline is not None:
            self._timer = asyncio.ensure_future(self._expire_at(deadline))

    async def _expire_at(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - self._now()))
        result = self.features.collector.expire(self._now())
        if result is not None:
            self._timer = None
            self._release(result)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


async def until_quiet(runner: Any, within: float) -> None:
    """Until the agent has finished speaking (its marks came back), up to ``within`` s."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            await runner.quiet.wait()


def tool_argument(call: ToolCall, name: str, default: Any = None) -> Any:
    args = call.arguments if isinstance(call.arguments, Mapping) else {}
    value = args.get(name)
    return default if value is None else value


def log_failure(what: str, exc: BaseException) -> None:
    event(log, what, logging.ERROR, error=type(exc).__name__, detail=str(exc)[:120])

