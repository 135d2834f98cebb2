"""A wire-compatible fake of Deepgram Flux (``/v2/listen``), next to the listen.v1 fake.

``FluxFake`` is a ``DeepgramFake`` that also answers ``/v2/listen``: the same auth
(``Authorization: Token <key>``, 401 otherwise), query ``model``/``encoding``/``sample_rate``/
``eot_threshold``/``eager_eot_threshold``/``eot_timeout_ms`` (400 for values Flux refuses),
binary audio in; ``Connected`` first, then ``TurnInfo`` messages (``StartOfTurn``, ``Update``
about every 240 ms of audio, ``EagerEndOfTurn``/``TurnResumed`` when eager mode is on,
``EndOfTurn``) with ``turn_index``, ``audio_window_start/end``, the turn's ``transcript`` and
``words``, ``end_of_turn_confidence``, ``trigger``; ``ForceEndTurn``, ``Configure`` and
``CloseStream`` in.

The end-of-turn "model" is a stand-in that works on audio time: its confidence that the caller
is done grows linearly with the silence after the last voiced frame and reaches 1.0 after
``confident_after_ms``; a turn ends when it crosses ``eot_threshold`` (or at
``eot_timeout_ms``). Words come from the tone code (or any recogniser), over the turn's audio.

Faults (inherited): ``drop_after_ms`` / ``drop_after_speech_ms`` abort connection
``drop_connection`` without a close frame after that much audio / that far into a turn;
``reject_connects`` refuses upgrades with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from app.core.audio import Encoding, to_pcm16
from tests.fakes.deepgram_server import _FRAME_MS, _VOICED_RMS, DeepgramFake

MODELS = ("flux-general-en", "flux-general-multi")


# --------------------------------------------------------------------------- the engine (pure)


@dataclass(slots=True)
class FluxQuery:
    model: str
    encoding: str
    sample_rate: int
    eot_threshold: float = 0.7
    eager_eot_threshold: float | None = None
    eot_timeout_ms: int = 5000

    @classmethod
    def parse(cls, query: dict[str, list[str]]) -> FluxQuery:
        """Raises ValueError naming the parameter, as the service answers 400."""

        def one(key: str, default: str | None = None) -> str | None:
            return query.get(key, [default])[0]  # type: ignore[list-item]

        model = one("model")
        if model not in MODELS:
            raise ValueError(f"model: {model!r}")
        encoding, rate = one("encoding", "linear16"), int(one("sample_rate", "16000") or 0)
        if encoding not in {"mulaw", "linear16"} or rate != 8000:
            raise ValueError(f"this fake takes mulaw/linear16 at 8000 Hz, got {encoding}/{rate}")
        eot = float(one("eot_threshold", "0.7") or 0.7)
        eager_raw = one("eager_eot_threshold")
        eager = float(eager_raw) if eager_raw else None
        timeout = int(one("eot_timeout_ms", "5000") or 5000)
        if not 0.5 <= eot <= 1.0:
            raise ValueError("eot_threshold")
        if eager is not None and not (0.3 <= eager <= 0.9 and eager <= eot):
            raise ValueError("eager_eot_threshold")
        if not 500 <= timeout <= 60_000:
            raise ValueError("eot_timeout_ms")
        return cls(model, encoding, rate, eot, eager, timeout)


@dataclass(frozen=True, slots=True)
class TurnEvent:
    """A ``TurnInfo`` to send once the words of ``audio`` are known."""

    event: str
    turn_index: int
    start: float
    end: float
    audio: bytes  # PCM16 8 kHz of the turn so far ("" between turns)
    confidence: float
    trigger: str | None = None


class FluxEngine:
    """Audio in, ``TurnEvent`` out, on audio time. No I/O, no clock."""

    def __init__(
        self, q: FluxQuery, confident_after_ms: float = 600, update_every_ms: float = 240
    ) -> None:
        self.q = q
        self.confident_after_ms = confident_after_ms
        self.update_every_ms = update_every_ms
        self._frame_bytes = 8 * _FRAME_MS * (1 if q.encoding == "mulaw" else 2)
        self._pending = b""
        self._pcm = bytearray()  # the turn in progress
        self.t = 0.0
        self.turn_index = 0
        self.in_turn = False
        self._turn_start = 0.0
        self._last_voiced = 0.0
        self._last_update = 0.0
        self._eager = False

    @property
    def speech_ms(self) -> float:
        """How far into the turn in progress the audio is (0 between turns)."""
        return (self.t - self._turn_start) * 1000 if self.in_turn else 0.0

    def feed(self, data: bytes) -> list[TurnEvent]:
        out: list[TurnEvent] = []
        self._pending += data
        n = self._frame_bytes
        while len(self._pending) >= n:
            frame, self._pending = self._pending[:n], self._pending[n:]
            out.extend(self._frame(frame))
        return out

    def force_end(self) -> list[TurnEvent]:
        return [self._end("manual")] if self.in_turn else []

    def _confidence(self) -> float:
        silent_ms = (self.t - self._last_voiced) * 1000
        return round(min(1.0, silent_ms / self.confident_after_ms), 3)

    def _frame(self, raw: bytes) -> list[TurnEvent]:
        enc = Encoding.MULAW if self.q.encoding == "mulaw" else Encoding.PCM16
        pcm = to_pcm16(raw, enc)
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        voiced = float(np.sqrt(np.mean(x**2))) > _VOICED_RMS
        self.t += _FRAME_MS / 1000
        due = (self.t - self._last_update) * 1000 >= self.update_every_ms
        if not self.in_turn:
            if voiced:
                self.in_turn, self._eager = True, False
                self._turn_start = self._last_voiced = self._last_update = self.t
                self._turn_start -= _FRAME_MS / 1000
                self._pcm = bytearray(pcm)
                return [self._event("StartOfTurn")]
            if due:
                start, self._last_update = self._last_update, self.t
                return [TurnEvent("Update", self.turn_index, start, self.t, b"", 0.0)]
            return []
        self._pcm += pcm
        if voiced:
            self._last_voiced = self.t
            if self._eager:
                self._eager = False
                return [self._event("TurnResumed")]
        conf = self._confidence()
        silent_ms = (self.t - self._last_voiced) * 1000
        if self.q.eot_threshold < 1.0 and conf >= self.q.eot_threshold:
            return [self._end("model")]
        if silent_ms >= self.q.eot_timeout_ms:
            return [self._end("timeout")]
        eager = self.q.eager_eot_threshold
        if eager is not None and not self._eager and conf >= eager:
            self._eager = True
            return [self._event("EagerEndOfTurn")]
        if due:
            return [self._event("Update")]
        return []

    def _event(self, kind: str, trigger: str | None = None) -> TurnEvent:
        self._last_update = self.t
        return TurnEvent(
            kind, self.turn_index, round(self._turn_start, 3), round(self.t, 3),
            bytes(self._pcm), self._confidence(), trigger,
        )  # fmt: skip

    def _end(self, trigger: str) -> TurnEvent:
        ev = self._event("EndOfTurn", trigger)
        self.in_turn, self._eager = False, False
        self._pcm = bytearray()
        self.turn_index += 1
        return ev


def turn_info(ev: TurnEvent, transcript: str, request_id: str, seq: int) -> dict:
    words = transcript.split()
    span = (ev.end - ev.start) / max(1, len(words))
    body = {
        "type": "TurnInfo",
        "request_id": request_id,
        "sequence_id": seq,
        "event": ev.event,
        "turn_index": ev.turn_index,
        "audio_window_start": ev.start,
        "audio_window_end": ev.end,
        "transcript": transcript,
        "words": [
            {
                "word": w,
                "confidence": 0.97,
                "start": round(ev.start + i * span, 3),
                "end": round(ev.start + (i + 1) * span, 3),
            }
            for i, w in enumerate(words)
        ],
        "end_of_turn_confidence": ev.confidence,
    }
    if ev.trigger is not None:
        body["trigger"] = ev.trigger
    return body


# --------------------------------------------------------------------------- the server


@dataclass
class FluxFake(DeepgramFake):
    confident_after_ms: float = 600
    update_every_ms: float = 240
    fatal_error_after_ms: float | None = None  # send an Error message after this much audio
    # observations for tests
    events_sent: list[list[str]] = field(default_factory=list)  # TurnInfo events per connection
    force_ends: int = 0

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != "/v2/listen":
            return super()._process_request(conn, request)
        if not self._authorised(request.headers):
            return conn.respond(HTTPStatus.UNAUTHORIZED, '{"err_code":"INVALID_AUTH"}\n')
        try:
            FluxQuery.parse(parse_qs(urlsplit(request.path).query))
        except ValueError as exc:
            return conn.respond(HTTPStatus.BAD_REQUEST, f'{{"err_msg":"{exc}"}}\n')
        if self.reject_connects > 0:
            self.reject_connects -= 1
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        if urlsplit(ws.request.path).path != "/v2/listen":
            await super()._handle(ws)
            return
        query = parse_qs(urlsplit(ws.request.path).query)
        self.queries.append(query)
        index = self.connections
        self.connections += 1
        self.audio_bytes.append(0)
        self.events_sent.append([])
        engine = FluxEngine(FluxQuery.parse(query), self.confident_after_ms, self.update_every_ms)
        rid = str(uuid.uuid4())
        seq = iter(range(1_000_000))
        await ws.send(
            json.dumps({"type": "Connected", "request_id": rid, "sequence_id": next(seq)})
        )
        outbox: asyncio.Queue[TurnEvent | dict | None] = asyncio.Queue(maxsize=1000)
        sender = asyncio.create_task(self._flux_send_loop(ws, outbox, rid, seq, index))
        bytes_per_ms = engine._frame_bytes / _FRAME_MS
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    self.audio_bytes[index] += len(message)
                    for item in engine.feed(message):
                        await outbox.put(item)
                    heard_ms = self.audio_bytes[index] / bytes_per_ms
                    drop, mid = self.drop_after_ms, self.drop_after_speech_ms
                    if index == self.drop_connection and (
                        (drop is not None and heard_ms >= drop)
                        or (mid is not None and engine.speech_ms >= mid)
                    ):
                        ws.transport.abort()  # a network drop: no close frame
                        return
                    fatal = self.fatal_error_after_ms
                    if fatal is not None and index == self.drop_connection and heard_ms >= fatal:
                        # An Error, then nothing more; the client is expected to hang up.
                        await outbox.put(
                            {"type": "Error", "code": "INTERNAL_SERVER_ERROR",
                             "description": "the fake failed on purpose"}
                        )  # fmt: skip
                        await outbox.put(None)
                        await sender
                        async for _ in ws:  # keep reading (or the client's close is never seen)
                            pass
                        return
                    continue
                body = json.loads(message)
                kind = body.get("type")
                if kind == "ForceEndTurn":
                    self.force_ends += 1
                    for item in engine.force_end():
                        await outbox.put(item)
                elif kind == "Configure":
                    await outbox.put(self._configure(engine, body))
                elif kind == "CloseStream":
                    await outbox.put(None)
                    await sender
                    await ws.close()
                    return
        except ConnectionClosed:
            pass
        finally:
            if not sender.done():
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    @staticmethod
    def _configure(engine: FluxEngine, body: dict) -> dict:
        thresholds = body.get("thresholds") or {}
        eot = thresholds.get("eot_threshold", engine.q.eot_threshold)
        if not 0.5 <= float(eot) <= 1.0:
            return {"type": "ConfigureFailure", "request_id": "", "sequence_id": 0}
        engine.q.eot_threshold = float(eot)
        return {
            "type": "ConfigureSuccess",
            "request_id": "",
            "sequence_id": 0,
            "thresholds": {"eot_threshold": engine.q.eot_threshold},
        }

    async def _flux_send_loop(
        self,
        ws: ServerConnection,
        outbox: asyncio.Queue[TurnEvent | dict | None],
        rid: str,
        seq: Iterator[int],
        index: int,
    ) -> None:
        eager_hidden = False  # an EagerEndOfTurn with no words yet went out as an Update
        while (item := await outbox.get()) is not None:
            if isinstance(item, dict):
                await ws.send(json.dumps({**item, "sequence_id": next(seq)}))
                continue
            if item.audio:
                if self.recognise_in_thread:
                    text = await asyncio.to_thread(self.recogniser, item.audio)
                else:
                    text = self.recogniser(item.audio)
            else:
                text = ""
            ev = item
            # Flux's rules: an EagerEndOfTurn always has words; TurnResumed only follows one.
            if ev.event == "EagerEndOfTurn" and not text:
                eager_hidden, ev = True, _as_update(ev)
            elif ev.event == "TurnResumed" and eager_hidden:
                eager_hidden, ev = False, _as_update(ev)
            elif ev.event == "EndOfTurn":
                eager_hidden = False
                if self.final_delay_ms:
                    await asyncio.sleep(self.final_delay_ms / 1000)
                if text:
                    self.transcripts.append(text)
            self.events_sent[index].append(ev.event)
            await ws.send(json.dumps(turn_info(ev, text, rid, next(seq))))


def _as_update(ev: TurnEvent) -> TurnEvent:
    return TurnEvent("Update", ev.turn_index, ev.start, ev.end, ev.audio, ev.confidence)
