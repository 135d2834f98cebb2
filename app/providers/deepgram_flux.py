"""Deepgram Flux (``/v2/listen``): live transcription whose turn ends come from a model.

Flux reports turns, not segments: ``StartOfTurn`` when the caller starts, ``Update`` about every
quarter second with the turn's transcript so far, ``EndOfTurn`` once its end-of-turn model is
``eot_threshold`` sure the caller is finished (or after ``eot_timeout_ms`` of silence). With
``eager_eot_threshold`` set it also sends ``EagerEndOfTurn`` (fairly sure) and ``TurnResumed``
(they went on after all). For the core that is: StartOfTurn -> ``SpeechStarted``; every
transcript short of the end -> an interim ``Transcript`` (barge-in decisions); EndOfTurn ->
``Transcript(is_final=True, speech_final=True)`` with the whole turn's words. Because that end
is already a model's judgement, ``end_of_turn_model = True`` tells the session not to add its
own adaptive wait on top.

Phone audio goes straight through: Flux takes ``mulaw`` at 8000 Hz. Lost words are handled as
for listen.v1 (``app.providers.deepgram``): audio is kept until a turn that covers it has ended
(``audio_window_end`` of the EndOfTurn), and after a dropped socket everything unsettled is sent
again first, so the new socket hears the turn in progress from its start. Between turns silence
is settled too, all but the last ``idle_keep_s`` (Flux announces a turn a little after it began).

Flux has no KeepAlive message and only ends a turn on audio it hears: if the caller's audio
stops coming (a muted browser, a stalled transport), the gap is filled with µ-law silence so
the turn still ends and the socket stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from app.core.audio import MULAW_8K
from app.core.providers import CallInfo, ProbableEnd, SpeechStarted, SttEvent, Transcript
from app.logs import event, get_logger, register_secret
from app.providers.deepgram import (
    AsyncDeepgramClient,
    LiveStream,
    _describe,
    environment_for,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # websockets.legacy, as in deepgram.py
    import deepgram.listen.v2.socket_client  # noqa: F401
    from deepgram.listen.v2.types import (
        ListenV2Connected,
        ListenV2FatalError,
        ListenV2TurnInfo,
        ListenV2Warning,
    )

log = get_logger(__name__)

MULAW_SILENCE = b"\xff"  # µ-law code for a zero sample
_CHUNK = 640  # 80 ms of µ-law: the frame size Flux is tuned for


class FluxError(RuntimeError):
    """The service sent a fatal ``Error`` message on the socket."""

    def __init__(self, code: str) -> None:
        super().__init__(f"flux error {code}")
        self.code = code


# --------------------------------------------------------------------------- pure parts


class FluxTurns:
    """Flux messages in, core events and settled stream time out. No I/O, no clock.

    Kept across reconnects: a turn that was in progress when a socket dropped is announced by
    the new socket again (its replay starts before the turn), which is not new speech.
    """

    def __init__(self, idle_keep_s: float = 1.0) -> None:
        self.idle_keep_s = idle_keep_s
        self.in_turn = False
        self.turns = 0  # turns ended
        self._resumed = False  # the next StartOfTurn repeats the turn in progress
        self._last_interim = ""

    def socket_restarted(self) -> None:
        self._resumed = self.in_turn

    def feed(self, msg: Any) -> tuple[list[SttEvent], float | None]:
        """One SDK message -> (events for the core, seconds of this socket's stream settled)."""
        if not isinstance(msg, ListenV2TurnInfo):
            return [], None
        text = msg.transcript.strip()
        kind = msg.event
        if kind == "EndOfTurn":
            self.in_turn = self._resumed = False
            self._last_interim = ""
            self.turns += 1
            return [Transcript(text, True, True, _confidence(msg))], msg.audio_window_end
        out: list[SttEvent] = []
        if kind == "StartOfTurn":
            if not self._resumed:
                out.append(SpeechStarted())
            self.in_turn, self._resumed = True, False
        elif not self.in_turn:  # an Update between turns: silence, settled but for the tail
            return [], max(0.0, msg.audio_window_end - self.idle_keep_s)
        if text and text != self._last_interim:  # Update, EagerEndOfTurn, TurnResumed
            self._last_interim = text
            out.append(Transcript(text, False, False, _confidence(msg)))
        if kind == "EagerEndOfTurn" and text:
            out.append(ProbableEnd(text))  # the session may start its reply on it
        elif kind == "TurnResumed":
            out.append(SpeechStarted())  # ... and takes it back
        return out, None


def _confidence(msg: ListenV2TurnInfo) -> float | None:
    words = msg.words or []
    return sum(w.confidence for w in words) / len(words) if words else None


def fill_silence(gap_s: float, max_s: float) -> bytes:
    """µ-law silence standing in for ``gap_s`` seconds of audio that never came."""
    return MULAW_SILENCE * int(min(gap_s, max_s) * MULAW_8K.bytes_per_second)


# --------------------------------------------------------------------------- provider


@dataclass(frozen=True, slots=True)
class FluxOptions:
    model: str = "flux-general-en"
    eot_threshold: float = 0.7  # the service's default; 1.0 turns the model's ends off
    eager_eot_threshold: float | None = None  # unset: no EagerEndOfTurn / TurnResumed
    eot_timeout_ms: int = 5000  # silence that ends a turn whatever the model thinks
    connect_timeout_s: float = 2.0
    reconnect_budget_s: float = 3.0  # give up (fatal SttFailure) after this long disconnected
    max_buffer_s: float = 30.0
    idle_keep_s: float = 1.0
    silence_fill_s: float = 1.0  # no caller audio for this long: send silence for the gap


class FluxStt:
    name = "flux"
    input_format = MULAW_8K
    # Its speech_final is an end-of-turn model's decision: the session answers it at once.
    end_of_turn_model = True

    def __init__(
        self, api_key: str, url: str | None = None, options: FluxOptions | None = None
    ) -> None:
        register_secret(api_key)
        self.options = options or FluxOptions()
        self._client = AsyncDeepgramClient(api_key=api_key, environment=environment_for(url))

    async def open(self, call: CallInfo) -> FluxStream:
        stream = FluxStream(self._client, self.options, call)
        await stream.start()
        return stream


class FluxStream(LiveStream):
    """listen.v2: turns from the model; silence sent for gaps (Flux only ends a turn on audio
    it hears); a dropped socket replays the turn in progress from its start."""

    provider = "flux"

    def __init__(self, client: AsyncDeepgramClient, options: FluxOptions, call: CallInfo):
        super().__init__(client, options, call)
        self._turns = FluxTurns(options.idle_keep_s)
        self._last_audio = time.monotonic()
        self.filled_bytes = 0  # silence fill, billed

    def _params(self) -> dict[str, Any]:
        o = self.options
        params: dict[str, Any] = {
            "model": o.model,
            "encoding": "mulaw",
            "sample_rate": "8000",
            "eot_threshold": str(o.eot_threshold),
            "eot_timeout_ms": str(o.eot_timeout_ms),
        }
        if o.eager_eot_threshold is not None:
            params["eager_eot_threshold"] = str(o.eager_eot_threshold)
        return params

    def _connect(self) -> Any:
        return self._client.listen.v2.connect(**self._params())

    def _socket_opened(self) -> None:
        self._turns.socket_restarted()

    def _beside_receiver(self, sock: Any) -> list[Coroutine[Any, Any, None]]:
        return [self._send_loop(sock)]

    def _audio_arrived(self) -> None:
        self._last_audio = time.monotonic()

    def _close_fields(self) -> dict[str, Any]:
        bps = MULAW_8K.bytes_per_second
        return {"filled_s": round(self.filled_bytes / bps, 2), "turns": self._turns.turns}

    def _reason(self, exc: BaseException) -> str:
        return f"error {exc.code}" if isinstance(exc, FluxError) else _describe(exc)

    def _permanent(self, reason: str) -> bool:
        return _is_permanent(reason)

    async def _send_loop(self, sock: Any) -> None:
        fill_after = self.options.silence_fill_s
        while True:  # drain first: after a reconnect the replay is already waiting
            self._audio.clear()
            while data := self._buf.unsent(_CHUNK):
                await self._send_audio(sock, data)
                self._buf.mark_sent(len(data))
                self.sent_bytes += len(data)
            if self._closing:
                await sock.send_close_stream()
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(fill_after):
                    await self._audio.wait()
            gap = time.monotonic() - self._last_audio
            if not self._audio.is_set() and gap >= fill_after:
                silence = fill_silence(gap, self.options.max_buffer_s / 2)
                self._buf.append(silence)
                self.filled_bytes += len(silence)
                self._last_audio = time.monotonic()

    async def _receive_loop(self, sock: Any) -> None:
        async for msg in sock:
            if isinstance(msg, ListenV2FatalError):
                raise FluxError(msg.code)  # the description may quote input: not logged
            if isinstance(msg, ListenV2Warning):
                event(log, "stt_warning", provider="flux", code=msg.code)
                continue
            if isinstance(msg, ListenV2Connected):
                continue
            events, settled = self._turns.feed(msg)
            if settled is not None:
                self._buf.settle(settled)
            for ev in events:
                await self._events.put(ev)


def _is_permanent(reason: str) -> bool:
    """Retrying cannot help: a refused key, or parameters the service will not take."""
    return reason in {"HTTP 400", "HTTP 401", "HTTP 403", "HTTP 404"}
