"""One simulated Twilio call against a running server: webhook, media stream, caller script.

The pure parts (TwiML reading, message building and checking, the playback clock) live in
their own modules; this is the thin I/O edge. Three activities share one ``TaskGroup``: the
pacer (a 20 ms media frame every 20 ms, as Twilio streams even when the caller is silent, plus
mark echoes when playback reaches them), the receiver (server messages) and the caller script.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidHandshake

from app.logs import bind_call, event, get_logger
from app.simulator.audio import CallerAudioError, load_wav, speak, stereo_wav
from app.simulator.plan import DEFAULT_CONVERSATION, CallerLine, CallOptions, as_line
from app.simulator.playback import PlaybackClock
from app.simulator.results import CallResult, MarkEcho, Turn, Violation
from app.simulator.twiml import StreamTwiml, TwimlError, dial_url, ends_call, parse_twiml
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

log = get_logger(__name__)

_POLL_S = 0.01  # how often the script re-checks what it waits for
_FRAME_S = FRAME_MS / 1000


class CallFailed(Exception):
    """The call could not be set up (webhook, TwiML, upgrade) or its audio prepared."""


async def simulate_call(
    server: str,
    lines: Sequence[CallerLine | str] = DEFAULT_CONVERSATION,
    options: CallOptions | None = None,
) -> CallResult:
    """Call the server at ``server`` (e.g. ``http://127.0.0.1:8080``) the way Twilio would and
    say ``lines`` one after another. Never raises for anything the server does: failures and
    protocol violations are in the returned ``CallResult``."""
    call = SimulatedCall(server, [as_line(line) for line in lines], options or CallOptions())
    return await call.run()


class SimulatedCall:
    def __init__(self, server: str, lines: list[CallerLine], options: CallOptions) -> None:
        self.server = server.rstrip("/")
        self.public_url = (options.public_url or server).rstrip("/")
        self.lines = lines
        self.options = options
        self.result = CallResult(
            call_sid=options.call_sid or new_sid("CA"), stream_sid=new_sid("MZ")
        )
        self.result.turns.append(Turn(0))
        self.playback = PlaybackClock()
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()  # reset when ``start`` goes out: all times are relative
        self._stream_t0 = 0.0  # when the current stream started (a call may have several)
        self._next_line = 0  # the caller's next line (a new stream goes on from there)
        self._gap_from: float | None = None  # the agent's last audio before a new stream
        self._msgs: TwilioMessages | None = None
        self._ws: ClientConnection | None = None
        self._closed = asyncio.Event()  # either side ended the stream
        self._wake = asyncio.Event()  # a mark arrived: the pacer recomputes its next wake-up
        self._send_lock = asyncio.Lock()  # one writer at a time keeps sequence numbers in order
        self._caller = bytearray()  # every frame we sent, for the recording
        self._speech: tuple[Turn, bytes, asyncio.Event] | None = None
        self._speech_pos = 0
        self._audio_turn = 0  # agent audio belongs to the turn whose caller speech ended last
        self._last_media = float("-inf")
        self._mark_received: deque[float] = deque()  # receive times of marks still pending

    def _now(self) -> float:
        return self._loop.time() - self._t0

    def _violate(self, at: float | None, kind: str, detail: str) -> None:
        self.result.violations.append(Violation(at, kind, detail))
        event(log, "sim_violation", kind=kind, detail=detail)

    # ------------------------------------------------------------------ the call

    async def run(self) -> CallResult:
        started = time.monotonic()
        with bind_call(self.result.call_sid):
            try:
                async with asyncio.timeout(self.options.call_timeout):
                    await self._run()
            except TimeoutError:
                self.result.error = f"call did not end within {self.options.call_timeout:g} s"
            except CallFailed as exc:
                self.result.error = str(exc)
            self.result.duration_s = time.monotonic() - started
            self._collect()
            if self.options.wav_out is not None and self.result.connected:
                await asyncio.to_thread(self._write_wav, Path(self.options.wav_out))
            if self.options.transcribe and self.result.connected:
                from app.simulator.transcribe import transcribe_turns

                await transcribe_turns(self.result.turns)
            r = self.result
            event(
                log,
                "sim_call_done",
                connected=r.connected,
                hangup=r.hangup,
                turns=len(r.turns),
                violations=len(r.violations),
                error=r.error,
                greeting_ms=_round(r.greeting_latency_ms),
            )
        return self.result

    async def _run(self) -> None:
        clips = await asyncio.to_thread(self._render_lines)
        stream = self._read_twiml(await self._webhook())
        self._next_line = 0
        while True:
            await self._stream(stream, clips)
            # The caller heard the agent until its buffered audio ran out or the stream ended.
            self._gap_from = min(max(self._last_media, self.playback.play_end), self._now())
            # Like Twilio: when the stream ends, the <Connect action> is asked what comes next.
            if stream.action is None or self.result.hangup == "caller":
                return
            stream = await self._follow(stream.action)
            if stream is None:
                return
            # the call goes on over a new stream: a new StreamSid, the agent speaks first
            self.result.stream_sid = new_sid("MZ")
            self.result.hangup = "none"
            self.result.turns.append(Turn(len(self.result.turns)))
            self._audio_turn = len(self.result.turns) - 1
            self._closed = asyncio.Event()
            self.playback = PlaybackClock()
            self._speech = None
            self._mark_received.clear()

    async def _stream(self, stream: StreamTwiml, clips: list[bytes | None]) -> None:
        if stream.dropped_query:
            self._violate(None, "stream_url_query", "Twilio drops the stream URL's query string")
        r = self.result
        self._msgs = TwilioMessages(
            self.options.account_sid, r.call_sid, r.stream_sid, stream.parameters
        )
        signature = RequestValidator(self.options.auth_token).compute_signature(stream.url, {})
        try:
            ws = await connect(
                dial_url(stream.url, self.server),
                additional_headers={"x-twilio-signature": signature},
                open_timeout=self.options.connect_timeout,
                close_timeout=2,
                compression=None,
                proxy=None,
                user_agent_header="Twilio.TmeWs/1.0",
            )
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise CallFailed(f"media stream did not open: {exc}") from None
        self._ws = ws
        async with ws:
            await ws.send(self._msgs.connected())
            await ws.send(self._msgs.start())
            if not self.result.connected:
                self._t0 = self._loop.time()
            self._stream_t0 = self._now()  # frames are paced from this stream's start
            self.result.connected = True
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._receive(ws))
                tasks.create_task(self._pace())
                try:
                    await self._script(clips)
                finally:
                    await self._hang_up(ws)

    async def _follow(self, action: str) -> StreamTwiml | None:
        """Request the stream's ``action`` URL (signed) with the call's parameters; the new
        stream it opens, or None when it ends the call."""
        o = self.options
        params = {
            "AccountSid": o.account_sid, "ApiVersion": "2010-04-01",
            "CallSid": self.result.call_sid, "CallStatus": "in-progress",
            "Direction": o.direction, "From": o.from_number, "To": o.to_number,
        }  # fmt: skip
        public = urlsplit(action)
        target = urlunsplit(urlsplit(self.server)[:2] + (public.path, public.query, ""))
        signature = RequestValidator(o.auth_token).compute_signature(action, params)
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=o.connect_timeout) as client:
                response = await client.post(
                    target, data=params,
                    headers={"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"},
                )  # fmt: skip
        except httpx.HTTPError as exc:
            self.result.after_streams.append(f"error: {type(exc).__name__}")
            return None
        if response.status_code != 200:
            self.result.after_streams.append(f"error: HTTP {response.status_code}")
            return None
        if ends_call(response.content):
            self.result.after_streams.append("hangup")
            return None
        self.result.after_streams.append("stream")
        return self._read_twiml(response)

    def _render_lines(self) -> list[bytes | None]:
        clips: list[bytes | None] = []
        for line in self.lines:
            try:
                if line.text is not None:
                    o = self.options
                    clips.append(speak(line.text, o.caller_voice, o.caller_rate_wpm))
                elif line.wav is not None:
                    clips.append(load_wav(line.wav))
                else:
                    clips.append(line.audio)  # raw µ-law, or None for DTMF
            except CallerAudioError as exc:
                raise CallFailed(str(exc)) from None
        return clips

    async def _webhook(self) -> httpx.Response:
        o = self.options
        params = {
            "AccountSid": o.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.result.call_sid,
            "CallStatus": "in-progress" if o.direction != "inbound" else "ringing",
            "Called": o.to_number,
            "Caller": o.from_number,
            "Direction": o.direction,
            "From": o.from_number,
            "To": o.to_number,
        }
        signature = RequestValidator(o.auth_token).compute_signature(
            self.public_url + o.webhook_path, params
        )
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=o.connect_timeout) as client:
                return await client.post(
                    self.server + o.webhook_path,
                    data=params,
                    headers={"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"},
                )
        except httpx.HTTPError as exc:
            raise CallFailed(f"voice webhook failed: {type(exc).__name__}: {exc}") from None

    def _read_twiml(self, response: httpx.Response) -> StreamTwiml:
        if response.status_code != 200:
            raise CallFailed(f"voice webhook answered HTTP {response.status_code}")
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in {"text/xml", "application/xml"}:
            self._violate(None, "webhook_content_type", f"TwiML served as {kind or 'nothing'!r}")
        try:
            return parse_twiml(response.content)
        except TwimlError as exc:
            raise CallFailed(f"TwiML: {exc}") from None

    async def _hang_up(self, ws: ClientConnection) -> None:
        if not self._closed.is_set():
            self.result.hangup = "caller"
            self._closed.set()
            self._wake.set()
            assert self._msgs is not None
            async with self._send_lock:
                try:
                    await ws.send(self._msgs.stop())
                except ConnectionClosed:
                    pass
        await ws.close()

    # ------------------------------------------------------------------ the caller's side

    async def _script(self, clips: list[bytes | None]) -> None:
        """The caller's lines from where the call is: on a new stream after a drop, the
        agent's first words (a recovery line) and then the lines not yet said."""
        turn, expect = self.result.turns[-1], True
        timeout = self.options.greeting_timeout
        pending = list(zip(self.lines, clips, strict=True))[self._next_line :]
        for line, clip in pending:
            if line.barge_in_ms is None:
                await self._reply_done(turn, timeout, expect)
            elif await self._until(partial(_replying, turn), timeout):
                assert turn.first_audio is not None
                await asyncio.sleep(turn.first_audio + line.barge_in_ms / 1000 - self._now())
            else:
                turn.timed_out = not self._closed.is_set()
            if self._closed.is_set():
                return
            turn, expect = await self._say(line, clip), line.expect_reply
            self._next_line += 1
            timeout = self.options.reply_timeout
        await self._reply_done(turn, timeout, expect)

    async def _reply_done(self, turn: Turn, within: float, expect: bool) -> None:
        """Wait for the agent's reply to start, then to play out with ``settle_ms`` of quiet."""
        settle = self.options.settle_ms / 1000
        started = await self._until(partial(_replying, turn), within if expect else settle)
        if not started:
            turn.timed_out = expect and not self._closed.is_set()
            return
        await self._until(
            lambda: self._now() >= max(self.playback.play_end, self._last_media) + settle
        )

    async def _until(self, done: Callable[[], bool], within: float | None = None) -> bool:
        """Poll ``done`` until true (True), or the stream closes or ``within`` s pass (False)."""
        deadline = None if within is None else self._now() + within
        while not done():
            if self._closed.is_set() or deadline is not None and self._now() >= deadline:
                return False
            await asyncio.sleep(_POLL_S)
        return True

    async def _say(self, line: CallerLine, clip: bytes | None) -> Turn:
        turn = Turn(
            len(self.result.turns),
            caller_text=line.label,
            dtmf=line.dtmf,
            barge_in=line.barge_in_ms is not None,
        )
        self.result.turns.append(turn)
        if line.dtmf:
            assert self._msgs is not None
            msgs = self._msgs
            turn.speech_onset = self._now()
            for i, digit in enumerate(line.dtmf):
                if i:
                    await asyncio.sleep(self.options.dtmf_gap_ms / 1000)
                await self._send(partial(msgs.dtmf, digit))
            turn.speech_end = self._now()
            self._audio_turn = turn.index
            return turn
        assert clip is not None
        done = asyncio.Event()
        self._speech, self._speech_pos = (turn, clip, done), 0
        await self._until(done.is_set)
        return turn

    # ------------------------------------------------------------------ the wire

    async def _send(self, build: Callable[[], str]) -> bool:
        if self._closed.is_set() or self._ws is None:
            return False
        async with self._send_lock:
            try:
                await self._ws.send(build())
            except ConnectionClosed:
                return False
        return True

    async def _pace(self) -> None:
        """Twilio's side of the clock: one caller frame per 20 ms, marks as playback reaches
        them. A late frame goes out at once (frame n always covers n*20 ms of call time)."""
        assert self._msgs is not None
        msgs = self._msgs
        n = 0
        while not self._closed.is_set():
            due = self._stream_t0 + (n + 1) * _FRAME_S
            while True:
                now = self._now()
                for name in self.playback.due(now):
                    await self._echo(name, now, cleared=False)
                if now >= due:
                    break
                marks = self.playback.next_due()
                wake = due if marks is None else min(due, marks)
                self._wake.clear()
                try:
                    async with asyncio.timeout_at(self._t0 + wake):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                if self._closed.is_set():
                    return
            lag = (now - due) * 1000
            self.result.send_lag_max_ms = max(self.result.send_lag_max_ms, lag)
            frame = self._next_frame(now)
            if not await self._send(partial(msgs.media, frame)):
                return
            self.result.frames_sent += 1
            n += 1

    def _next_frame(self, now: float) -> bytes:
        if self._speech is None:
            frame = MULAW_SILENCE * FRAME_BYTES
        else:
            turn, clip, done = self._speech
            frame = clip[self._speech_pos : self._speech_pos + FRAME_BYTES]
            frame += MULAW_SILENCE * (FRAME_BYTES - len(frame))
            if self._speech_pos == 0:
                turn.speech_onset = now
            self._speech_pos += FRAME_BYTES
            if self._speech_pos >= len(clip):
                turn.speech_end = now
                self._audio_turn = turn.index
                self._speech = None
                done.set()
        self._caller += frame
        return frame

    async def _receive(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                await self._on_message(message, self._now())
        except ConnectionClosedError as exc:
            if not self._closed.is_set():
                self._violate(self._now(), "abnormal_close", f"stream dropped: {exc}")
        finally:
            if not self._closed.is_set():
                self.result.hangup = "agent"
                self._closed.set()

    async def _on_message(self, message: str | bytes, now: float) -> None:
        try:
            ev = parse_server_message(message, self.result.stream_sid)
        except ProtocolViolation as exc:
            self._violate(now, exc.kind, exc.detail)
            return
        if isinstance(ev, AgentMedia):
            if self._gap_from is not None:
                self.result.resume_gaps_ms.append(round((now - self._gap_from) * 1000, 1))
                self._gap_from = None
            turn = self.result.turns[self._audio_turn]
            if turn.first_audio is None:
                turn.first_audio = now
            self.playback.media(ev.audio, now, turn.index)
            self._last_media = now
        elif isinstance(ev, AgentMark):
            if self.playback.mark(ev.name, now):  # nothing buffered: echoed at once
                await self._echo(ev.name, now, cleared=False, received=now)
            else:
                self._mark_received.append(now)
                self._wake.set()
        elif isinstance(ev, AgentClear):
            self.result.clears.append(now)
            for turn in reversed(self.result.turns):
                if turn.speech_onset is not None:
                    if turn.clear_at is None and now >= turn.speech_onset:
                        turn.clear_at = now
                    break
            for name in self.playback.clear(now):
                await self._echo(name, now, cleared=True)

    async def _echo(
        self, name: str, now: float, cleared: bool, received: float | None = None
    ) -> None:
        if received is None:  # a pending mark: they leave in the order they came
            received = self._mark_received.popleft() if self._mark_received else now
        self.result.marks.append(MarkEcho(name, received, now, cleared))
        assert self._msgs is not None
        msgs = self._msgs
        await self._send(lambda: msgs.mark(name))

    # ------------------------------------------------------------------ after the call

    def _collect(self) -> None:
        turns = self.result.turns
        parts: dict[int, list[bytes]] = {}
        for seg in self.playback.segments:
            parts.setdefault(seg.turn, []).append(seg.audio)
        for turn in turns:
            turn.agent_audio = b"".join(parts.get(turn.index, []))
            turn.interrupted = turn.index in self.playback.interrupted_turns
        for gap in self.playback.gaps:
            turns[gap.turn].gaps_ms.append(gap.ms)
        self.result.dropped_ms = self.playback.dropped_bytes / 8

    def _write_wav(self, path: Path) -> None:
        agent = [(seg.start, seg.audio) for seg in self.playback.segments]
        stereo_wav(path, bytes(self._caller), agent, len(self._caller) / 8000)
        self.result.wav_path = path


def _replying(turn: Turn) -> bool:
    return turn.first_audio is not None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
