"""A tiny agent server speaking the server side of Twilio's webhook and Media Streams protocol.

Real starlette + uvicorn on an unused loopback port. It checks both signatures with the twilio
package's ``RequestValidator``, answers the webhook with TwiML from the project's builders,
plays a greeting, detects the caller's speech by energy (start: one loud frame; end: a run of
quiet frames), answers each utterance after ``reply_delay_ms`` and sends ``clear`` when the
caller talks over it. Everything it sees and does is logged with times on the event loop's
clock, so tests can check the simulator from the other end of the wire.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.request_validator import RequestValidator

from app.core.audio import Encoding, pcm16_to_mulaw, to_pcm16
from tests.fakes.asgi import LoopbackServer
from twiml.voice import connect_stream

AUTH_TOKEN = "fake-agent-auth-token"
PUBLIC_URL = "https://voice.example.test"
_LOUD_RMS = 500.0


def tone(ms: int, hz: float = 440.0, level: float = 0.3) -> bytes:
    """A sine tone as raw 8 kHz µ-law."""
    t = np.arange(int(8 * ms)) / 8000
    pcm = (level * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()
    return pcm16_to_mulaw(pcm)


def rms(mulaw: bytes) -> float:
    samples = np.frombuffer(to_pcm16(mulaw, Encoding.MULAW), dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


@dataclass
class StreamLog:
    """One media stream as the fake server saw it. Times are ``loop.time()``."""

    path: str
    signature_ok: bool
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    marks_sent: dict[str, float] = field(default_factory=dict)
    mark_echoes: dict[str, float] = field(default_factory=dict)
    clears_sent: list[float] = field(default_factory=list)
    speech_starts: list[float] = field(default_factory=list)
    speech_ends: list[float] = field(default_factory=list)
    replies_sent: list[float] = field(default_factory=list)
    dtmf: str = ""
    closed_by_server: bool = False

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m for _, m in self.received if m.get("event") == kind]


@dataclass
class FakeAgent:
    greeting: bytes = field(default_factory=lambda: tone(600, 660))
    reply: bytes = field(default_factory=lambda: tone(800, 880))
    chunk_ms: int = 100  # agent media message size
    reply_delay_ms: int = 100  # after the caller's speech end
    endpoint_frames: int = 10  # quiet frames that end the caller's speech (200 ms)
    clear_on_speech: bool = True
    hangup_after: int | None = None  # close once reply k has played (0: the greeting)
    junk: list[str | bytes] = field(default_factory=list)  # sent right after ``start``
    lead_mark: bool = False  # send a mark before any audio (it must come back at once)
    twiml: Callable[[str], str] | None = None  # override the webhook's answer
    webhooks: list[dict[str, str]] = field(default_factory=list)
    webhook_signature_ok: list[bool] = field(default_factory=list)
    streams: list[StreamLog] = field(default_factory=list)

    # ------------------------------------------------------------------ HTTP

    async def voice(self, request: Request) -> Response:
        # Twilio posts application/x-www-form-urlencoded, one value per name.
        params = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        self.webhooks.append(params)
        ok = RequestValidator(AUTH_TOKEN).validate(
            PUBLIC_URL + "/twilio/voice", params, request.headers.get("x-twilio-signature", "")
        )
        self.webhook_signature_ok.append(ok)
        if not ok:
            return Response("bad signature", status_code=403)
        url = f"wss://voice.example.test/twilio/stream/{params['CallSid']}"
        body = self.twiml(url) if self.twiml else connect_stream(url, {"who": "test", "n": "1"})
        return Response(body, media_type="application/xml")

    # ------------------------------------------------------------------ media stream

    async def stream(self, ws: WebSocket) -> None:
        wss_url = "wss://voice.example.test" + ws.url.path
        sig = ws.headers.get("x-twilio-signature", "")
        ok = RequestValidator(AUTH_TOKEN).validate(wss_url, {}, sig)
        log = StreamLog(ws.url.path, ok)
        self.streams.append(log)
        if not ok:
            await ws.close(code=1008)
            return
        await ws.accept()
        loop = asyncio.get_running_loop()
        state = _Talk(self, ws, log)
        try:
            while True:
                text = await ws.receive_text()
                now = loop.time()
                msg = json.loads(text)
                log.received.append((now, msg))
                kind = msg["event"]
                if kind == "start":
                    state.sid = msg["streamSid"]
                    for item in self.junk:
                        if isinstance(item, bytes):
                            await ws.send_bytes(item)
                        else:
                            await ws.send_text(item)
                    if self.lead_mark:
                        await state.mark("lead")
                    await state.say(self.greeting, "greeting")
                elif kind == "media":
                    await state.hear(base64.b64decode(msg["media"]["payload"]), now)
                elif kind == "mark":
                    name = msg["mark"]["name"]
                    log.mark_echoes[name] = now
                    state.outstanding.discard(name)
                    if self.hangup_after is not None and name == f"say-{self.hangup_after}":
                        log.closed_by_server = True
                        await ws.close()
                        return
                elif kind == "dtmf":
                    log.dtmf += msg["dtmf"]["digit"]
                elif kind == "stop":
                    return
        except WebSocketDisconnect:
            return
        finally:
            await state.aclose()

    # ------------------------------------------------------------------ server

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        app = Starlette(
            routes=[
                Route("/twilio/voice", self.voice, methods=["POST"]),
                WebSocketRoute("/twilio/stream/{sid}", self.stream),
            ]
        )
        async with LoopbackServer(app) as srv:
            yield srv.url


class _Talk:
    """The fake agent's turn-taking for one stream."""

    def __init__(self, agent: FakeAgent, ws: WebSocket, log: StreamLog) -> None:
        self.agent = agent
        self.ws = ws
        self.log = log
        self.sid = ""
        self.outstanding: set[str] = set()  # marks sent, not echoed: the caller hears us
        self.count = 0
        self.speaking = False
        self.quiet = 0
        self._reply: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send_text(json.dumps({**msg, "streamSid": self.sid}))

    async def mark(self, name: str) -> None:
        self.outstanding.add(name)
        self.log.marks_sent[name] = self._loop.time()
        await self.send({"event": "mark", "mark": {"name": name}})

    async def say(self, audio: bytes, _label: str) -> None:
        step = 8 * self.agent.chunk_ms
        for i in range(0, len(audio), step):
            payload = base64.b64encode(audio[i : i + step]).decode()
            await self.send({"event": "media", "media": {"payload": payload}})
        await self.mark(f"say-{self.count}")
        self.count += 1

    async def hear(self, frame: bytes, now: float) -> None:
        loud = rms(frame) > _LOUD_RMS
        if loud and not self.speaking:
            self.speaking = True
            self.log.speech_starts.append(now)
            if self.outstanding and self.agent.clear_on_speech:
                self.log.clears_sent.append(self._loop.time())
                await self.send({"event": "clear"})
        if self.speaking:
            self.quiet = 0 if loud else self.quiet + 1
            if self.quiet >= self.agent.endpoint_frames:
                self.speaking = False
                self.log.speech_ends.append(now)
                await self.aclose()
                self._reply = asyncio.create_task(self._answer())

    async def _answer(self) -> None:
        await asyncio.sleep(self.agent.reply_delay_ms / 1000)
        self.log.replies_sent.append(self._loop.time())
        await self.say(self.agent.reply, "reply")

    async def aclose(self) -> None:
        if self._reply is not None:
            self._reply.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reply
            self._reply = None
