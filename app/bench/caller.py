"""Many simulated Twilio callers in one process, cheap enough not to measure themselves.

``app.simulator`` gives each call its own pacer, poller and script coroutine: right for one
call, too costly for hundreds, and a load generator that burns more CPU than the server it
measures ends up measuring itself. Here each call is a small state machine advanced by one
shared ticker. Calls are spread over ``phases`` slots of the 20 ms frame, so the server does not
get every call's frame in the same millisecond (real streams are not in phase either); each
socket has one receiver task. Wire format, TwiML reading and the playback clock (mark echoes,
``clear``) are the simulator's own modules; results are the simulator's ``CallResult``.

All sends go out from the ticker, so a call's messages keep their sequence numbers in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
from dataclasses import dataclass, field

import httpx
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidHandshake

from app.simulator.playback import PlaybackClock
from app.simulator.results import CallResult, MarkEcho, Turn, Violation
from app.simulator.twiml import TwimlError, dial_url, parse_twiml
from app.simulator.wire import (
    FRAME_BYTES,
    FRAME_MS,
    MULAW_SILENCE,
    AgentClear,
    AgentMark,
    AgentMedia,
    ProtocolViolation,
    TwilioMessages,
    new_sid,
    parse_server_message,
)
from telephony import paths

_FRAME_S = FRAME_MS / 1000
_SILENT_FRAME = MULAW_SILENCE * FRAME_BYTES


@dataclass(frozen=True, slots=True)
class Line:
    """One caller line as trimmed 8 kHz µ-law. ``barge_in_ms``: start it this long after the
    agent's previous reply starts, instead of after it has played out."""

    label: str
    clip: bytes
    barge_in_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CallerPlan:
    lines: tuple[Line, ...]
    auth_token: str
    account_sid: str = "AC" + "0" * 32
    from_number: str = "+15005550006"
    to_number: str = "+15005550001"
    webhook_path: str = paths.VOICE
    greeting_timeout_s: float = 10.0
    reply_timeout_s: float = 10.0
    settle_ms: int = 400  # quiet after the agent's audio played out before the caller speaks
    # ... plus up to this much more, drawn per turn: callers who all follow one script would
    # otherwise reach each turn in lockstep, a burst no real set of callers produces
    settle_jitter_ms: int = 1200
    call_timeout_s: float = 120.0


@dataclass(slots=True)
class BenchCall:
    result: CallResult
    started_at: float | None = None  # loop time ``start`` went out
    ended_at: float | None = None
    lateness_ms: list[float] = field(default_factory=list)  # per agent media within a reply


class _Stage(enum.Enum):
    WAITING = "waiting for the agent"
    SPEAKING = "speaking"
    DONE = "done"


class LeanCall:
    """One call's caller side. ``tick`` (from the shared clock) sends; ``receive`` reads."""

    def __init__(self, plan: CallerPlan, seed: int = 0) -> None:
        self.plan = plan
        self._rng = random.Random(seed)
        self._settle = self._draw_settle()
        self.call = BenchCall(CallResult(call_sid=new_sid("CA"), stream_sid=new_sid("MZ")))
        self.result = self.call.result
        self.result.turns.append(Turn(0))
        self.playback = PlaybackClock()
        self.ws: ClientConnection | None = None
        self.closed = False
        self._msgs: TwilioMessages | None = None
        self._t0 = 0.0
        self._stage = _Stage.WAITING
        self._waiting = self.result.turns[0]  # the turn whose reply we wait for
        self._wait_from = 0.0
        self._next_line = 0
        self._speech: tuple[Turn, bytes] | None = None
        self._pos = 0
        self._audio_turn = 0  # agent audio belongs to the turn whose caller speech ended last
        self._last_media = float("-inf")
        self._outbox: list[str] = []  # mark echoes, sent with the next tick

    # ------------------------------------------------------------------ set-up

    async def connect(self, client: httpx.AsyncClient, server: str) -> bool:
        """Webhook, TwiML, media socket, ``connected`` + ``start``. False (with ``error``) if
        the call could not be set up."""
        p, r = self.plan, self.result
        params = {
            "AccountSid": p.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": r.call_sid,
            "CallStatus": "ringing",
            "Called": p.to_number,
            "Caller": p.from_number,
            "Direction": "inbound",
            "From": p.from_number,
            "To": p.to_number,
        }
        signer = RequestValidator(p.auth_token)
        url = server + p.webhook_path
        try:
            resp = await client.post(
                url,
                data=params,
                headers={"X-Twilio-Signature": signer.compute_signature(url, params)},
            )
            if resp.status_code != 200:
                raise TwimlError(f"voice webhook answered HTTP {resp.status_code}")
            stream = parse_twiml(resp.content)
        except (httpx.HTTPError, TwimlError) as exc:
            r.error = f"webhook: {exc}"
            return False
        self._msgs = TwilioMessages(p.account_sid, r.call_sid, r.stream_sid, stream.parameters)
        try:
            self.ws = await connect(
                dial_url(stream.url, server),
                additional_headers={"x-twilio-signature": signer.compute_signature(stream.url, {})},
                open_timeout=10,
                close_timeout=2,
                compression=None,
                proxy=None,
            )
            await self.ws.send(self._msgs.connected())
            await self.ws.send(self._msgs.start())
        except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
            r.error = f"media stream: {type(exc).__name__}: {exc}"
            return False
        loop_now = asyncio.get_running_loop().time()
        self._t0 = self.call.started_at = loop_now
        r.connected = True
        return True

    # ------------------------------------------------------------------ the shared clock

    async def tick(self, now_abs: float) -> bool:
        """Echo due marks, advance the script, send this frame. False once the call is over."""
        if self.closed or self.ws is None or self._msgs is None:
            return False
        now = now_abs - self._t0
        if now > self.plan.call_timeout_s:
            self.result.error = f"call did not end within {self.plan.call_timeout_s:g} s"
            self._stage = _Stage.DONE
        for name in self.playback.due(now):
            self._echo(name, now, cleared=False)
        if self._stage is _Stage.WAITING:
            self._advance(now)
        if self._stage is _Stage.DONE:
            return False
        frames = self._outbox
        self._outbox = []
        frames.append(self._msgs.media(self._next_frame(now)))
        try:
            for frame in frames:
                await self.ws.send(frame)
        except ConnectionClosed:
            self._gone()
            return False
        self.result.frames_sent += 1
        return True

    def _advance(self, now: float) -> None:
        turn = self._waiting
        lines = self.plan.lines
        line = lines[self._next_line] if self._next_line < len(lines) else None
        if turn.first_audio is None:
            limit = self.plan.greeting_timeout_s if turn.index == 0 else self.plan.reply_timeout_s
            if now - self._wait_from < limit:
                return
            turn.timed_out = True  # no reply: say the next line anyway, as a caller would
        elif line is not None and line.barge_in_ms is not None:
            if now < turn.first_audio + line.barge_in_ms / 1000:
                return
        elif now < max(self.playback.play_end, self._last_media) + self._settle:
            return
        self._settle = self._draw_settle()
        if line is None:
            self._stage = _Stage.DONE
            return
        spoken = Turn(
            len(self.result.turns), caller_text=line.label, barge_in=line.barge_in_ms is not None
        )
        self.result.turns.append(spoken)
        self._speech, self._pos = (spoken, line.clip), 0
        self._next_line += 1
        self._stage = _Stage.SPEAKING

    def _draw_settle(self) -> float:
        return (self.plan.settle_ms + self._rng.uniform(0, self.plan.settle_jitter_ms)) / 1000

    def _next_frame(self, now: float) -> bytes:
        if self._speech is None:
            return _SILENT_FRAME
        turn, clip = self._speech
        frame = clip[self._pos : self._pos + FRAME_BYTES]
        if len(frame) < FRAME_BYTES:
            frame += MULAW_SILENCE * (FRAME_BYTES - len(frame))
        if self._pos == 0:
            turn.speech_onset = now
        self._pos += FRAME_BYTES
        if self._pos >= len(clip):
            turn.speech_end = now
            self._audio_turn = turn.index
            self._speech = None
            self._waiting, self._wait_from = turn, now
            self._stage = _Stage.WAITING
        return frame

    # ------------------------------------------------------------------ the server's side

    async def receive(self) -> None:
        ws = self.ws
        assert ws is not None
        loop = asyncio.get_running_loop()
        try:
            async for message in ws:
                self._on_message(message, loop.time() - self._t0)
        except ConnectionClosedError as exc:
            if not self.closed:
                self._violate(loop.time() - self._t0, "abnormal_close", f"stream dropped: {exc}")
        finally:
            if not self.closed:
                self.result.hangup = "agent"
                self._gone()

    def _on_message(self, message: str | bytes, now: float) -> None:
        try:
            ev = parse_server_message(message, self.result.stream_sid)
        except ProtocolViolation as exc:
            self._violate(now, exc.kind, exc.detail)
            return
        if isinstance(ev, AgentMedia):
            turn = self.result.turns[self._audio_turn]
            segments = self.playback.segments
            within = turn.first_audio is not None and bool(segments)
            within = within and segments[-1].turn == turn.index
            late = (now - self.playback.play_end) * 1000 if within else None
            if turn.first_audio is None:
                turn.first_audio = now
            self.playback.media(ev.audio, now, turn.index)
            self._last_media = now
            if late is not None:
                self.call.lateness_ms.append(max(0.0, late))
        elif isinstance(ev, AgentMark):
            for name in self.playback.mark(ev.name, now):
                self._echo(name, now, cleared=False)
        elif isinstance(ev, AgentClear):
            self.result.clears.append(now)
            for turn in reversed(self.result.turns):
                if turn.speech_onset is not None:
                    if turn.clear_at is None and now >= turn.speech_onset:
                        turn.clear_at = now
                    break
            for name in self.playback.clear(now):
                self._echo(name, now, cleared=True)

    def _echo(self, name: str, now: float, cleared: bool) -> None:
        assert self._msgs is not None
        self.result.marks.append(MarkEcho(name, now, now, cleared))
        self._outbox.append(self._msgs.mark(name))

    def _violate(self, at: float | None, kind: str, detail: str) -> None:
        self.result.violations.append(Violation(at, kind, detail))

    def _gone(self) -> None:
        self.closed = True
        if self.call.ended_at is None:
            self.call.ended_at = asyncio.get_running_loop().time()

    async def hang_up(self) -> None:
        """The caller is done: ``stop``, then close the socket."""
        ws, msgs = self.ws, self._msgs
        if ws is None or msgs is None:
            return
        if not self.closed:
            self.result.hangup = "caller"
            self._gone()
            with contextlib.suppress(ConnectionClosed):
                await ws.send(msgs.stop())
        with contextlib.suppress(Exception):
            await ws.close()

    def finish(self) -> None:
        for gap in self.playback.gaps:
            self.result.turns[gap.turn].gaps_ms.append(gap.ms)
        for turn in self.result.turns:
            turn.interrupted = turn.index in self.playback.interrupted_turns
        self.result.dropped_ms = self.playback.dropped_bytes / 8
        if self.call.started_at is not None and self.call.ended_at is not None:
            self.result.duration_s = self.call.ended_at - self.call.started_at


@dataclass(slots=True)
class PoolRun:
    calls: list[BenchCall]
    tick_lag_ms: list[float]  # how late the shared clock fired: the load generator's own health


class CallerPool:
    """Run ``n`` calls against ``server``, their starts spread evenly over ``spread_s``."""

    def __init__(self, server: str, plan: CallerPlan, phases: int = 4) -> None:
        self.server = server.rstrip("/")
        self.plan = plan
        self.phases = max(1, phases)
        self._slots: list[list[LeanCall]] = [[] for _ in range(self.phases)]
        self._pending = 0  # calls not yet connected
        self._tick_lag: list[float] = []

    async def run(self, n: int, spread_s: float) -> PoolRun:
        calls = [LeanCall(self.plan, seed=i) for i in range(n)]
        self._pending = n
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with (
            httpx.AsyncClient(trust_env=False, timeout=10.0, limits=limits) as client,
            asyncio.TaskGroup() as tasks,
        ):
            tasks.create_task(self._clock(tasks))
            loop = asyncio.get_running_loop()
            begin = loop.time()
            for i, call in enumerate(calls):
                await asyncio.sleep(max(0.0, begin + spread_s * i / max(1, n) - loop.time()))
                tasks.create_task(self._start(call, client, i % self.phases, tasks))
        for call in calls:
            call.finish()
        return PoolRun([c.call for c in calls], self._tick_lag)

    async def _start(
        self, call: LeanCall, client: httpx.AsyncClient, slot: int, tasks: asyncio.TaskGroup
    ) -> None:
        try:
            if await call.connect(client, self.server):
                self._slots[slot].append(call)
                tasks.create_task(call.receive())
        except Exception as exc:  # one call's set-up must not end the others
            call.result.error = f"set-up: {type(exc).__name__}: {exc}"
        finally:
            self._pending -= 1

    async def _clock(self, tasks: asyncio.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        step = _FRAME_S / self.phases
        begin = loop.time()
        k = 0
        while self._pending > 0 or any(self._slots):
            due = begin + k * step
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            self._tick_lag.append((now - due) * 1000)
            slot = self._slots[k % self.phases]
            over = [call for call in slot if not await call.tick(now)]
            for call in over:
                slot.remove(call)
                tasks.create_task(call.hang_up())
            k += 1
            if now - due > 1.0:  # far behind (a stall): skip ahead rather than burst
                k = int((now - begin) / step) + 1
