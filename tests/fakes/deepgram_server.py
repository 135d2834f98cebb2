"""A wire-compatible fake of Deepgram's live transcription socket (``/v1/listen``) and REST check.

Speaks what the real service speaks, as far as our client sees it: ``Authorization: Token <key>``
on the upgrade (401 otherwise), query parameters ``encoding``/``sample_rate``/``interim_results``/
``endpointing``/``utterance_end_ms``/``vad_events``, binary audio in, JSON ``Results`` (with
``channel.alternatives[0].transcript``, ``is_final``, ``speech_final``, ``start``, ``duration``),
``SpeechStarted``, ``UtteranceEnd`` and, on ``CloseStream``, ``Metadata`` out; ``KeepAlive``
and ``Finalize`` in. Segmentation is by energy on audio time (not wall time), like the real
service's endpointing. Words come from a recogniser: the tone code by default, Whisper if asked.

Faults and latency: ``drop_after_ms`` aborts the TCP connection (no close frame) after that much
audio on connection ``drop_connection`` (the first by default), ``drop_after_speech_ms`` once an
utterance has run that long (mid-word, whenever it comes); ``final_delay_ms`` holds final
results back; ``reject_connects`` refuses that many upgrades with 503.

Run standalone: ``python -m tests.fakes.deepgram_server --port 8101 [--whisper]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from app.core.audio import Encoding, to_pcm16
from tests.fakes import tonecode

Recogniser = Callable[[bytes], str]  # 16-bit PCM at 8 kHz -> words

_FRAME_MS = 20
_VOICED_RMS = 300.0


# --------------------------------------------------------------------------- the engine (pure)


@dataclass(frozen=True, slots=True)
class Segment:
    """Audio to transcribe and report: a ``Results`` message once the words are known."""

    audio: bytes  # PCM16 8 kHz
    start: float
    duration: float
    is_final: bool
    speech_final: bool
    from_finalize: bool = False


@dataclass(frozen=True, slots=True)
class Notice:
    """A message that needs no recognition (SpeechStarted, UtteranceEnd)."""

    body: dict


@dataclass(slots=True)
class ListenOptions:
    encoding: str = "linear16"
    sample_rate: int = 16000
    interim_results: bool = False
    endpointing_ms: int = 10
    utterance_end_ms: int | None = None
    vad_events: bool = False

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> ListenOptions:
        def one(key: str, default: str) -> str:
            return query.get(key, [default])[0]

        endpointing = one("endpointing", "10")
        ue = one("utterance_end_ms", "")
        return cls(
            encoding=one("encoding", "linear16"),
            sample_rate=int(one("sample_rate", "16000")),
            interim_results=one("interim_results", "false") == "true",
            endpointing_ms=0 if endpointing == "false" else int(endpointing),
            utterance_end_ms=int(ue) if ue else None,
            vad_events=one("vad_events", "false") == "true",
        )


class ListenEngine:
    """Audio in, ``Segment``/``Notice`` out, on audio time. No I/O, no clock."""

    def __init__(self, opts: ListenOptions, interim_every_ms: int | None = 300) -> None:
        if opts.encoding not in {"mulaw", "linear16"} or opts.sample_rate != 8000:
            raise ValueError(f"unsupported audio {opts.encoding}/{opts.sample_rate}")
        self.opts = opts
        self.interim_every_ms = interim_every_ms
        self._frame_bytes = 8 * _FRAME_MS * (1 if opts.encoding == "mulaw" else 2)
        self._pending = b""
        self._pcm = bytearray()  # audio since the last final result
        self.t = 0.0  # audio seconds received
        self._seg_start = 0.0
        self._speaking = False
        self._speech_start = 0.0
        self._last_voiced = 0.0
        self._last_interim = 0.0
        self._words_since_ue = False
        self._ue_sent = True

    def feed(self, data: bytes) -> list[Segment | Notice]:
        out: list[Segment | Notice] = []
        self._pending += data
        while len(self._pending) >= self._frame_bytes:
            frame, self._pending = (
                self._pending[: self._frame_bytes],
                self._pending[self._frame_bytes :],
            )
            out.extend(self._frame(frame))
        return out

    def _frame(self, raw: bytes) -> list[Segment | Notice]:
        enc = Encoding.MULAW if self.opts.encoding == "mulaw" else Encoding.PCM16
        pcm = to_pcm16(raw, enc)
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        voiced = float(np.sqrt(np.mean(x**2))) > _VOICED_RMS
        self._pcm += pcm
        self.t += _FRAME_MS / 1000
        out: list[Segment | Notice] = []
        if voiced:
            self._last_voiced = self.t
            if not self._speaking:
                self._speaking = True
                self._speech_start = self.t - _FRAME_MS / 1000
                self._last_interim = self.t
                if self.opts.vad_events:
                    out.append(
                        Notice(
                            {
                                "type": "SpeechStarted",
                                "channel": [0, 1],
                                "timestamp": round(self.t - _FRAME_MS / 1000, 3),
                            }
                        )
                    )
            elif (
                self.opts.interim_results
                and self.interim_every_ms
                and (self.t - self._last_interim) * 1000 >= self.interim_every_ms
            ):
                self._last_interim = self.t
                out.append(self._segment(is_final=False, speech_final=False))
        elif self._speaking:
            silent_ms = (self.t - self._last_voiced) * 1000
            if silent_ms >= max(self.opts.endpointing_ms, _FRAME_MS):
                self._speaking = False
                self._words_since_ue = True
                self._ue_sent = False
                out.append(self._final(speech_final=bool(self.opts.endpointing_ms)))
        else:
            ue = self.opts.utterance_end_ms
            if ue and not self._ue_sent and (self.t - self._last_voiced) * 1000 >= ue:
                self._ue_sent = True
                out.append(
                    Notice(
                        {
                            "type": "UtteranceEnd",
                            "channel": [0, 1],
                            "last_word_end": round(self._last_voiced, 3),
                        }
                    )
                )
            elif self.t - self._seg_start >= 2.0:
                # Long silences are finalised too (empty transcript), as the real service does.
                out.append(self._final(speech_final=False))
        return out

    @property
    def speech_ms(self) -> float:
        """How long the utterance in progress has been going (0 between utterances)."""
        return (self.t - self._speech_start) * 1000 if self._speaking else 0.0

    def finalize(self) -> list[Segment | Notice]:
        if self.t - self._seg_start <= 0:
            return []
        self._speaking = False
        return [self._final(speech_final=False, from_finalize=True)]

    def _segment(self, is_final: bool, speech_final: bool, from_finalize: bool = False) -> Segment:
        return Segment(
            audio=bytes(self._pcm),
            start=round(self._seg_start, 3),
            duration=round(self.t - self._seg_start, 3),
            is_final=is_final,
            speech_final=speech_final,
            from_finalize=from_finalize,
        )

    def _final(self, speech_final: bool, from_finalize: bool = False) -> Segment:
        seg = self._segment(True, speech_final, from_finalize)
        self._pcm = bytearray()
        self._seg_start = self.t
        return seg


def _voiced(pcm: bytes) -> np.ndarray:
    n = len(pcm) // (2 * 8 * _FRAME_MS)
    x = np.frombuffer(pcm[: n * 2 * 8 * _FRAME_MS], dtype="<i2").astype(np.float64)
    return np.sqrt(np.mean(x.reshape(n, -1) ** 2, axis=1)) > _VOICED_RMS if n else np.zeros(0, bool)


class Context:
    """The utterance so far on one connection (``carry_context``): the audio of its finals and
    the words already sent. A silence of ``gap_ms`` or more between voices starts a new one."""

    def __init__(self, gap_ms: float = 300.0) -> None:
        self.gap_frames = int(gap_ms / _FRAME_MS)
        self.audio = bytearray()
        self.said = 0
        self.quiet = 0  # frames of the silent finals since the context's last voice

    def before(self, pcm: bytes) -> bytes:
        past, now = _voiced(bytes(self.audio)), _voiced(pcm)
        if past.any() and now.any():
            gap = (past.size - 1 - np.nonzero(past)[0][-1]) + self.quiet + np.nonzero(now)[0][0]
            if gap >= self.gap_frames:
                self.audio.clear()
                self.said = self.quiet = 0
        return bytes(self.audio) + pcm

    def after(self, seg: Segment, text: str) -> str:
        words = text.split()
        new = " ".join(words[self.said :])
        if seg.is_final:
            voiced = _voiced(seg.audio)
            if voiced.any():
                self.audio += seg.audio
                self.said = len(words)
                self.quiet = 0
            else:
                self.quiet += voiced.size
        return new


def results_message(seg: Segment, transcript: str, request_id: str) -> dict:
    words = transcript.split()
    span = seg.duration / max(1, len(words))
    return {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": seg.duration,
        "start": seg.start,
        "is_final": seg.is_final,
        "speech_final": seg.speech_final,
        "from_finalize": seg.from_finalize,
        "channel": {
            "alternatives": [
                {
                    "transcript": transcript,
                    "confidence": 0.98 if words else 0.0,
                    "words": [
                        {
                            "word": w,
                            "start": round(seg.start + i * span, 3),
                            "end": round(seg.start + (i + 1) * span, 3),
                            "confidence": 0.98,
                            "punctuated_word": w,
                        }
                        for i, w in enumerate(words)
                    ],
                }
            ]
        },
        "metadata": {
            "request_id": request_id,
            "model_info": {"name": "fake-nova", "version": "1", "arch": "fake"},
            "model_uuid": "00000000-0000-0000-0000-000000000000",
        },
    }


# --------------------------------------------------------------------------- the server


@dataclass
class DeepgramFake:
    api_key: str = "dg-test-key"
    recogniser: Recogniser = tonecode.decode
    recognise_in_thread: bool = False  # True for slow recognisers (Whisper)
    interim_every_ms: int | None = 300
    final_delay_ms: float = 0.0
    # Recognise each result with the audio of the utterance's earlier finals before it, as the
    # real model hears a sentence cut by a short pause: the words after those already sent.
    # For recognisers that only know whole lines (the benchmark's).
    carry_context: bool = False
    drop_after_ms: float | None = None  # abort connection ``drop_connection`` after this audio
    drop_connection: int = 0
    drop_after_speech_ms: float | None = None  # abort once an utterance has run this long
    reject_connects: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    # observations for tests
    connections: int = 0
    audio_bytes: list[int] = field(default_factory=list)  # per connection
    keepalives: int = 0
    queries: list[dict[str, list[str]]] = field(default_factory=list)
    extensions: list[str] = field(default_factory=list)  # Sec-WebSocket-Extensions offered
    transcripts: list[str] = field(default_factory=list)  # finals sent
    _server: Server | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> DeepgramFake:
        self._server = await serve(
            self._handle, self.host, self.port, process_request=self._process_request
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> DeepgramFake:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _authorised(self, headers: Headers) -> bool:
        return headers.get("Authorization", "") == f"Token {self.api_key}"

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if not self._authorised(request.headers):
            return conn.respond(HTTPStatus.UNAUTHORIZED, '{"err_code":"INVALID_AUTH"}\n')
        if path == "/v1/projects":  # the REST check the doctor makes (plain GET, no upgrade)
            body = json.dumps({"projects": [{"project_id": "p1", "name": "fake"}]})
            resp = conn.respond(HTTPStatus.OK, body)
            resp.headers["Content-Type"] = "application/json"
            return resp
        if path != "/v1/listen":
            return conn.respond(HTTPStatus.NOT_FOUND, "not found\n")
        self.extensions.append(request.headers.get("Sec-WebSocket-Extensions", ""))
        if self.reject_connects > 0:
            self.reject_connects -= 1
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        self.queries.append(query)
        index = self.connections
        self.connections += 1
        self.audio_bytes.append(0)
        engine = ListenEngine(ListenOptions.from_query(query), self.interim_every_ms)
        request_id = str(uuid.uuid4())
        outbox: asyncio.Queue[Segment | Notice | None] = asyncio.Queue(maxsize=1000)
        sender = asyncio.create_task(self._send_loop(ws, outbox, request_id))
        bytes_per_ms = engine._frame_bytes / _FRAME_MS
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    self.audio_bytes[index] += len(message)
                    for item in engine.feed(message):
                        await outbox.put(item)
                    drop = self.drop_after_ms
                    mid = self.drop_after_speech_ms
                    if index == self.drop_connection and (
                        (drop is not None and self.audio_bytes[index] >= drop * bytes_per_ms)
                        or (mid is not None and engine.speech_ms >= mid)
                    ):
                        ws.transport.abort()  # a network drop: no close frame
                        return
                    continue
                kind = json.loads(message).get("type")
                if kind == "KeepAlive":
                    self.keepalives += 1
                elif kind == "Finalize":
                    for item in engine.finalize():
                        await outbox.put(item)
                elif kind == "CloseStream":
                    for item in engine.finalize():
                        await outbox.put(item)
                    await outbox.put(None)
                    await sender
                    await ws.send(json.dumps(self._metadata(request_id, engine.t)))
                    await ws.close()
                    return
        except ConnectionClosed:
            pass
        finally:
            if not sender.done():
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    async def _send_loop(
        self, ws: ServerConnection, outbox: asyncio.Queue[Segment | Notice | None], rid: str
    ) -> None:
        context = Context()
        while (item := await outbox.get()) is not None:
            if isinstance(item, Notice):
                await ws.send(json.dumps(item.body))
                continue
            audio = context.before(item.audio) if self.carry_context else item.audio
            if self.recognise_in_thread:
                text = await asyncio.to_thread(self.recogniser, audio)
            else:
                text = self.recogniser(audio)
            if self.carry_context:
                text = context.after(item, text)
            if item.is_final and self.final_delay_ms:
                await asyncio.sleep(self.final_delay_ms / 1000)
            if item.is_final and text:
                self.transcripts.append(text)
            await ws.send(json.dumps(results_message(item, text, rid)))

    @staticmethod
    def _metadata(request_id: str, duration: float) -> dict:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": request_id,
            "sha256": "0" * 64,
            "created": "2026-01-01T00:00:00.000Z",
            "duration": round(duration, 3),
            "channels": 1,
        }


async def _main() -> None:
    parser = argparse.ArgumentParser(description="Fake Deepgram live transcription on loopback")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="dg-test-key")
    parser.add_argument("--final-delay-ms", type=float, default=0.0)
    parser.add_argument("--whisper", action="store_true", help="recognise speech with Whisper")
    args = parser.parse_args()
    fake = DeepgramFake(api_key=args.api_key, port=args.port, final_delay_ms=args.final_delay_ms)
    if args.whisper:
        from tests.fakes.whisper import recognise

        fake.recogniser, fake.recognise_in_thread, fake.interim_every_ms = recognise, True, None
    async with fake:
        print(f"deepgram fake on {fake.ws_url}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
