"""A wire-compatible fake of ElevenLabs text to speech: HTTP streaming and the stream-input socket.

``POST /v1/text-to-speech/{voice_id}/stream?output_format=ulaw_8000|pcm_16000|...`` with header
``xi-api-key`` and a JSON body (``text``, ``model_id``) answers with chunked raw audio, no
header, exactly like the real service. ``/v1/text-to-speech/{voice_id}/stream-input`` is the
websocket that takes text as it is written (first message ``{"text": " "}``, then text chunks
with ``flush``/``try_trigger_generation``, then ``{"text": ""}``) and answers ``{"audio": b64}``
messages and ``{"isFinal": true}``. ``GET /v1/user`` and ``GET /v1/voices`` serve the doctor.

The voice is the tone code (so a test caller can decode exactly what the agent said) or eSpeak.
Faults (``faults``, one per request): ``"500"``, ``"429"``, ``"stall"`` (no response for
``stall_s``), ``"drop"`` (cut the body after the first chunk). Latency: ``first_audio_ms``, and
``chunk_interval_ms`` between 100 ms chunks (0: as fast as possible).

Run standalone: ``python -m tests.fakes.elevenlabs_server --port 8103 [--espeak]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.core.audio import AudioChunk, AudioFormat, Encoding, convert_once
from tests.fakes import tonecode

Voice = Callable[[str, int], bytes]  # (text, sample rate) -> PCM16

VOICES = {"21m00Tcm4TlvDq8ikWAM": "Rachel", "test-voice": "Test"}
_SCHEDULE = (120, 160, 250, 290)  # the service's default chunk_length_schedule


def parse_output_format(value: str) -> AudioFormat | None:
    kind, _, rate = value.partition("_")
    if not rate.isdigit():
        return None
    if kind == "ulaw" and rate == "8000":
        return AudioFormat(Encoding.MULAW, 8000)
    if kind == "pcm" and int(rate) in {8000, 16000, 22050, 24000, 32000, 44100, 48000}:
        return AudioFormat(Encoding.PCM16, int(rate))
    return None  # mp3/opus/alaw: real formats this fake does not produce


def tone_voice(text: str, rate: int) -> bytes:
    return tonecode.encode(text, rate)


def espeak_voice(text: str, rate: int) -> bytes:
    from app.providers.local_tts import render

    return render(text, AudioFormat(Encoding.PCM16, rate))


def _detail(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": {"status": code, "message": message}}, status_code=status)


@dataclass
class ElevenLabsFake:
    api_key: str = "xi-test-key"
    voice: Voice = tone_voice
    faults: list[str] = field(default_factory=list)
    first_audio_ms: float = 0.0
    chunk_interval_ms: float = 0.0
    stall_s: float = 30.0
    # observations for tests
    requests: list[dict] = field(default_factory=list)
    characters: int = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/text-to-speech/{voice_id}/stream", self._stream, methods=["POST"]),
                WebSocketRoute("/v1/text-to-speech/{voice_id}/stream-input", self._stream_input),
                Route("/v1/user", self._user, methods=["GET"]),
                Route("/v1/voices", self._voices, methods=["GET"]),
            ]
        )

    def _unauthorised(self, key: str | None) -> bool:
        return key != self.api_key

    async def _user(self, request: Request) -> Response:
        if self._unauthorised(request.headers.get("xi-api-key")):
            return _detail(401, "invalid_api_key", "Invalid API key")
        return JSONResponse(
            {
                "user_id": "u_fake",
                "subscription": {"tier": "creator", "character_count": self.characters},
            }
        )

    async def _voices(self, request: Request) -> Response:
        if self._unauthorised(request.headers.get("xi-api-key")):
            return _detail(401, "invalid_api_key", "Invalid API key")
        return JSONResponse(
            {
                "voices": [
                    {"voice_id": k, "name": v, "category": "premade"} for k, v in VOICES.items()
                ]
            }
        )

    def _audio(self, text: str, fmt: AudioFormat) -> bytes:
        pcm = self.voice(text, fmt.sample_rate)
        src = AudioFormat(Encoding.PCM16, fmt.sample_rate)
        return convert_once(AudioChunk(pcm, src), fmt).data

    async def _stream(self, request: Request) -> Response:
        if self._unauthorised(request.headers.get("xi-api-key")):
            return _detail(401, "invalid_api_key", "Invalid API key")
        voice_id = request.path_params["voice_id"]
        if voice_id not in VOICES:
            return _detail(404, "voice_not_found", f"A voice with id {voice_id} was not found.")
        fmt = parse_output_format(request.query_params.get("output_format", "mp3_44100_128"))
        if fmt is None:
            return _detail(422, "invalid_output_format", "unsupported output_format here")
        body = await request.json()
        self.requests.append({"voice_id": voice_id, "query": dict(request.query_params), **body})
        fault = self.faults.pop(0) if self.faults else None
        if fault in {"500", "429"}:
            return _detail(int(fault), "server_error", "Something went wrong")
        if fault == "stall":
            await asyncio.sleep(self.stall_s)
        text = body.get("text", "")
        if not text.strip():
            return _detail(400, "empty_text", "text must not be empty")
        self.characters += len(text)
        audio = self._audio(text, fmt)
        return StreamingResponse(
            self._chunks(audio, fmt, drop=fault == "drop"), media_type="audio/basic"
        )

    async def _chunks(
        self, audio: bytes, fmt: AudioFormat, drop: bool = False
    ) -> AsyncIterator[bytes]:
        if self.first_audio_ms:
            await asyncio.sleep(self.first_audio_ms / 1000)
        step = fmt.bytes_for_ms(100)
        for i in range(0, len(audio), step):
            if i and self.chunk_interval_ms:
                await asyncio.sleep(self.chunk_interval_ms / 1000)
            yield audio[i : i + step]
            if drop:
                raise ConnectionResetError("fault injection: body cut")

    async def _stream_input(self, ws: WebSocket) -> None:
        key = ws.headers.get("xi-api-key")
        await ws.accept()
        fmt = parse_output_format(ws.query_params.get("output_format", "pcm_16000"))
        try:
            first = json.loads(await ws.receive_text())
            if self._unauthorised(key or first.get("xi_api_key")) or fmt is None:
                await ws.close(code=1008, reason="invalid api key or output format")
                return
            schedule = list(
                first.get("generation_config", {}).get("chunk_length_schedule", _SCHEDULE)
            )
            buffer = ""
            while True:
                msg = json.loads(await ws.receive_text())
                text = msg.get("text", "")
                end = text == ""
                buffer += text
                due = schedule[0] if schedule else _SCHEDULE[-1]
                if buffer.strip() and (
                    end
                    or msg.get("flush")
                    or len(buffer) >= due
                    or msg.get("try_trigger_generation")
                ):
                    if schedule and not end:
                        schedule.pop(0)
                    self.characters += len(buffer)
                    audio = self._audio(buffer, fmt)
                    buffer = ""
                    async for chunk in self._chunks(audio, fmt):
                        await ws.send_text(
                            json.dumps({"audio": base64.b64encode(chunk).decode(), "isFinal": None})
                        )
                if end:
                    await ws.send_text(json.dumps({"isFinal": True}))
                    await ws.close()
                    return
        except WebSocketDisconnect:
            return


async def _main() -> None:
    from tests.fakes.asgi import serve_forever

    parser = argparse.ArgumentParser(description="Fake ElevenLabs text to speech on loopback")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="xi-test-key")
    parser.add_argument("--first-audio-ms", type=float, default=0.0)
    parser.add_argument("--espeak", action="store_true", help="speak with eSpeak, not tones")
    args = parser.parse_args()
    fake = ElevenLabsFake(api_key=args.api_key, first_audio_ms=args.first_audio_ms)
    if args.espeak:
        fake.voice = espeak_voice
    await serve_forever(fake.app(), args.port, "elevenlabs")


if __name__ == "__main__":
    import contextlib

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
