"""The Twilio edge over real sockets: a uvicorn server on an unused port, signed requests made
with twilio's own RequestValidator, and a ``websockets`` client playing Twilio's part of the
Media Streams protocol. Calls run the real CallRunner with the embedded local providers
(faster-whisper, the scripted agent, eSpeak NG); the caller stays silent, so the agent only
greets, and says goodbye when the call is drained.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.config import ServerSettings, Settings, TwilioSettings
from app.core.audio import MULAW_8K
from app.logs import JsonFormatter
from app.runtime.context import AppContext, Providers
from app.runtime.phrases import PhraseCache
from app.server import create_app
from app.transports import twilio as transport
from telephony.security import StreamTokens
from tests.fakes.asgi import LoopbackServer

AUTH = "f3c9a1b2d4e5f60718293a4b5c6d7e8f"
ACCOUNT = "AC" + "1" * 32
CALLER, CALLEE = "+14155550142", "+14155550199"
SILENCE = b"\xff" * 160  # 20 ms of µ-law silence


def call_sid(n: int) -> str:
    return f"CA{n:032x}"


def stream_sid(n: int) -> str:
    return f"MZ{n:032x}"


# --------------------------------------------------------------------------- server


@dataclasses.dataclass
class Running:
    port: int
    ctx: AppContext

    @property
    def voice_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/twilio/voice"

    @property
    def media_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/twilio/media"


def make_settings(auth_token: str | None = AUTH, **server: Any) -> Settings:
    return dataclasses.replace(
        Settings(),
        server=ServerSettings(**server),
        twilio=TwilioSettings(account_sid=ACCOUNT, auth_token=auth_token, stream_token_ttl_s=60),
    )


@contextlib.asynccontextmanager
async def serve(ctx: AppContext) -> AsyncIterator[Running]:
    async with LoopbackServer(create_app(ctx), lifespan="on") as srv:
        yield Running(srv.port, ctx)


@pytest.fixture
async def server(providers: Providers) -> AsyncIterator[Running]:
    async with serve(AppContext(make_settings(), providers, PhraseCache())) as running:
        yield running


class LogLines(logging.Handler):
    """Every log record of a test, kept raw and as the JSON line production would write."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        self.formatter_ = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.formatter_.format(record))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines if json.loads(line)["event"] == name]


@pytest.fixture(autouse=True)
def logs() -> Any:
    handler = LogLines()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    # Phone numbers are personal data: not in any line written, and not handed to the logger
    # either (the formatter's redaction is a last line of defence, not the plan).
    for number in (CALLER, CALLEE, CALLER[1:], CALLEE[1:]):
        assert not any(number in line for line in handler.lines)
        for record in handler.records:
            fields = getattr(record, "fields", {}) or {}
            assert number not in record.getMessage() + json.dumps(fields, default=str)


# --------------------------------------------------------------------------- Twilio's side


def form(sid: str, **extra: str) -> dict[str, str]:
    fields = {
        "AccountSid": ACCOUNT,
        "CallSid": sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": CALLER,
        "To": CALLEE,
        "ApiVersion": "2010-04-01",
    }
    fields.update(extra)
    return fields


def sign(url: str, params: dict[str, str] | None = None, token: str = AUTH) -> str:
    return RequestValidator(token).compute_signature(url, params or {})


async def post_voice(
    url: str, fields: dict[str, str], signature: str | None, **headers: str
) -> httpx.Response:
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    async with httpx.AsyncClient() as client:
        return await client.post(url, data=fields, headers=headers)


def stream_parameters(twiml: str) -> tuple[str, dict[str, str]]:
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    assert stream is not None
    return stream.get("url", ""), {p.get("name", ""): p.get("value", "") for p in stream}


class FakeTwilio:
    """Twilio's half of one Media Stream. Sends its frames and plays ours like Twilio does:
    our audio is buffered and "played" in real time, a mark is echoed when playback reaches
    it, and a clear drops the buffer and echoes every pending mark at once."""

    def __init__(self, ws: ClientConnection, n: int) -> None:
        self.ws = ws
        self.sid = call_sid(n)
        self.stream = stream_sid(n)
        self.seq = 0
        self.chunk = 0
        self.audio = bytearray()
        self.marks: list[str] = []
        self.echoed: list[str] = []
        self.clears = 0
        self._played_until = 0.0  # monotonic time at which our buffered audio runs out
        self._pending: list[tuple[float, str]] = []

    def _next(self) -> str:
        self.seq += 1
        return str(self.seq)

    async def open(self, params: dict[str, str]) -> None:
        await self.ws.send(
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        )
        start = {
            "accountSid": ACCOUNT,
            "streamSid": self.stream,
            "callSid": self.sid,
            "tracks": ["inbound"],
            "customParameters": params,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        msg = {"event": "start", "sequenceNumber": self._next(), "start": start}
        await self.ws.send(json.dumps({**msg, "streamSid": self.stream}))

    async def media(self, payload: bytes = SILENCE) -> None:
        self.chunk += 1
        media = {
            "track": "inbound",
            "chunk": str(self.chunk),
            "timestamp": str(self.chunk * 20),
            "payload": base64.b64encode(payload).decode(),
        }
        await self._send("media", media)

    async def dtmf(self, digit: str) -> None:
        await self._send("dtmf", {"track": "inbound_track", "digit": digit})

    async def stop(self) -> None:
        await self._send("stop", {"accountSid": ACCOUNT, "callSid": self.sid})

    async def _send(self, name: str, body: dict[str, Any]) -> None:
        msg = {"event": name, "sequenceNumber": self._next(), name: body, "streamSid": self.stream}
        await self.ws.send(json.dumps(msg))

    async def pump(self, seconds: float) -> None:
        """Caller silence in real time for ``seconds``, reading and answering our frames."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.media()
            await self.read_available()
            await asyncio.sleep(0.02)

    async def read_available(self, wait: float = 0.0) -> None:
        while True:
            try:
                frame = await asyncio.wait_for(self.ws.recv(), wait or 0.001)
            except TimeoutError:
                break
            self.handle(frame)
        await self.echo_due_marks()

    async def echo_due_marks(self) -> None:
        now = time.monotonic()
        while self._pending and self._pending[0][0] <= now:
            _, name = self._pending.pop(0)
            self.echoed.append(name)
            await self._send("mark", {"name": name})

    def handle(self, frame: str | bytes) -> None:
        assert isinstance(frame, str), "the server must send text frames only"
        msg = json.loads(frame)
        assert msg["streamSid"] == self.stream
        now = time.monotonic()
        if msg["event"] == "media":
            assert set(msg) == {"event", "streamSid", "media"}
            audio = base64.b64decode(msg["media"]["payload"], validate=True)
            self.audio += audio
            self._played_until = max(self._played_until, now) + len(audio) / 8000
        elif msg["event"] == "mark":
            self.marks.append(msg["mark"]["name"])
            self._pending.append((max(self._played_until, now), msg["mark"]["name"]))
        elif msg["event"] == "clear":
            self.clears += 1
            self._played_until = now
            self._pending = [(now, name) for _, name in self._pending]
        else:
            raise AssertionError(f"unexpected frame {msg['event']}")

    async def run_until_closed(self, within: float = 20.0, silence: bool = True) -> int:
        """Keep playing our part (silence, mark echoes) until the server closes the socket."""
        async with asyncio.timeout(within):
            try:
                while True:
                    if silence:
                        await self.media()
                    await self.read_available(0.02)
            except ConnectionClosed:
                pass
        assert self.ws.close_code is not None
        return self.ws.close_code

    async def drain_until_closed(self, within: float = 10.0) -> int:
        """After our stop or a violation: read what is left until the server closes."""
        async with asyncio.timeout(within):
            try:
                while True:
                    self.handle(await self.ws.recv())
            except ConnectionClosed:
                pass
        assert self.ws.close_code is not None
        return self.ws.close_code


async def admitted_call(srv: Running, n: int) -> dict[str, str]:
    fields = form(call_sid(n))
    resp = await post_voice(srv.voice_url, fields, sign(srv.voice_url, fields))
    assert resp.status_code == 200
    url, params = stream_parameters(resp.text)
    assert url == srv.media_url
    return params


@contextlib.asynccontextmanager
async def media_socket(srv: Running, signature: str | None = "auto") -> AsyncIterator[Any]:
    headers = {}
    if signature == "auto":
        signature = sign(srv.media_url)
    if signature is not None:
        headers["x-twilio-signature"] = signature
    async with connect(srv.media_url, additional_headers=headers) as ws:
        yield ws


async def wait_for(predicate: Any, within: float = 10.0) -> None:
    for _ in range(int(within / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {within} s")


# --------------------------------------------------------------------------- webhook


async def test_signed_webhook_answers_connect_stream(server: Running, logs: LogLines) -> None:
    fields = form(call_sid(1))
    resp = await post_voice(server.voice_url, fields, sign(server.voice_url, fields))
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(resp.text)
    assert [c.tag for c in root] == ["Connect", "Hangup"]
    url, params = stream_parameters(resp.text)
    assert url == server.media_url
    assert params["from"] == CALLER and params["to"] == CALLEE
    assert params["direction"] == "inbound"
    tokens = StreamTokens.from_auth_token(AUTH, 60)
    assert tokens.verify(params["token"], call_sid(1), time.time()).value == "ok"
    assert tokens.verify(params["token"], call_sid(2), time.time()).value == "bad signature"
    (answered,) = logs.events("twilio_call_answered")
    assert answered["call_id"] == call_sid(1)
    assert answered["caller"] == "+1********42"


async def test_webhook_behind_tls_proxy_signs_public_url(server: Running) -> None:
    public = "https://agent.example.com/twilio/voice"
    fields = form(call_sid(3), Direction="outbound-api")
    resp = await post_voice(
        server.voice_url,
        fields,
        sign(public, fields),
        **{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "agent.example.com"},
    )
    assert resp.status_code == 200
    url, params = stream_parameters(resp.text)
    assert url == "wss://agent.example.com/twilio/media"
    assert params["direction"] == "outbound"


@pytest.mark.parametrize("case", ["missing", "forged", "wrong-url", "tampered"])
async def test_bad_webhook_signature_is_an_empty_403(
    server: Running, logs: LogLines, case: str
) -> None:
    fields = form(call_sid(4))
    signature = {
        "missing": None,
        "forged": sign(server.voice_url, fields, token="0" * 32),
        "wrong-url": sign("https://elsewhere.example/twilio/voice", fields),
        "tampered": sign(server.voice_url, {**fields, "From": "+14155550100"}),
    }[case]
    resp = await post_voice(server.voice_url, fields, signature)
    assert resp.status_code == 403
    assert resp.content == b""
    assert logs.events("twilio_call_answered") == []
    (rejected,) = logs.events("twilio_webhook_rejected")
    assert rejected["reason"] == ("missing signature" if case == "missing" else "invalid signature")
    assert rejected["call_id"] == call_sid(4)  # the claimed CallSid, to find it in Twilio's logs
    assert rejected["url"] == server.voice_url


async def test_webhook_rejects_oversized_and_sidless_bodies(server: Running) -> None:
    big = {"CallSid": call_sid(5), "Pad": "x" * 70_000}
    assert (await post_voice(server.voice_url, big, sign(server.voice_url, big))).status_code == 413
    nosid = form("")
    resp = await post_voice(server.voice_url, nosid, sign(server.voice_url, nosid))
    assert resp.status_code == 400


async def test_webhook_answers_busy_when_no_capacity(server: Running) -> None:
    server.ctx.calls.draining = True
    fields = form(call_sid(6))
    resp = await post_voice(server.voice_url, fields, sign(server.voice_url, fields))
    assert resp.status_code == 200
    root = ET.fromstring(resp.text)
    assert [c.tag for c in root] == ["Say", "Hangup"]
    assert "busy" in (root[0].text or "")


async def test_answered_calls_hold_their_slot_until_the_stream_starts(
    providers: Providers,
) -> None:
    ctx = AppContext(make_settings(max_concurrent_calls=1), providers, PhraseCache())

    async def answer(srv: Running, n: int) -> list[str]:
        fields = form(call_sid(n))
        resp = await post_voice(srv.voice_url, fields, sign(srv.voice_url, fields))
        assert resp.status_code == 200
        return [c.tag for c in ET.fromstring(resp.text)]

    async with serve(ctx) as srv:
        assert await answer(srv, 30) == ["Connect", "Hangup"]
        assert await answer(srv, 30) == ["Connect", "Hangup"]  # Twilio retrying the webhook
        assert await answer(srv, 31) == ["Say", "Hangup"]  # slot reserved for call 30
        params = await admitted_call(srv, 30)
        async with media_socket(srv) as ws:
            twilio = FakeTwilio(ws, 30)
            await twilio.open(params)
            await wait_for(lambda: ctx.calls.get(call_sid(30)) is not None)
            assert await answer(srv, 31) == ["Say", "Hangup"]  # slot now live
            await twilio.pump(0.2)
            await twilio.stop()
            assert await twilio.drain_until_closed() == 1000
        await wait_for(lambda: len(ctx.calls) == 0)
        assert await answer(srv, 32) == ["Connect", "Hangup"]


async def test_without_auth_token_only_loopback_is_served(
    providers: Providers, logs: LogLines
) -> None:
    ctx = AppContext(make_settings(auth_token=None), providers, PhraseCache())
    async with serve(ctx) as srv:
        warnings = logs.events("twilio_signatures_disabled")
        assert len(warnings) == 1 and warnings[0]["level"] == "warning"
        fields = form(call_sid(7))
        resp = await post_voice(srv.voice_url, fields, None)
        assert resp.status_code == 200
        _, params = stream_parameters(resp.text)
        proxied = await post_voice(
            srv.voice_url, fields, None, **{"X-Forwarded-For": "203.0.113.7"}
        )
        assert proxied.status_code == 403 and proxied.content == b""
        # The stream works the same way, with a per-process token key.
        async with media_socket(srv, signature=None) as ws:
            twilio = FakeTwilio(ws, 7)
            await twilio.open(params)
            await twilio.pump(0.3)
            await twilio.stop()
            assert await twilio.drain_until_closed() == 1000
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                srv.media_url, additional_headers={"X-Forwarded-For": "203.0.113.7"}
            ):
                pass
        assert refused.value.response.status_code == 403


# --------------------------------------------------------------------------- media stream


@pytest.mark.parametrize("signature", [None, "forged"])
async def test_upgrade_with_bad_signature_is_refused(
    server: Running, logs: LogLines, signature: str | None
) -> None:
    value = None if signature is None else sign(server.media_url, token="0" * 32)
    with pytest.raises(InvalidStatus) as refused:
        async with media_socket(server, signature=value):
            pass
    assert refused.value.response.status_code == 403
    assert len(logs.events("twilio_stream_refused")) == 1


async def test_upgrade_signed_for_public_wss_url_behind_proxy(server: Running) -> None:
    public = "wss://agent.example.com/twilio/media"
    headers = {
        "x-twilio-signature": sign(public),
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "agent.example.com",
    }
    async with connect(server.media_url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.close()


async def test_call_runs_end_to_end_over_the_stream(server: Running, logs: LogLines) -> None:
    params = await admitted_call(server, 10)
    async with media_socket(server) as ws:
        twilio = FakeTwilio(ws, 10)
        await twilio.open(params)
        await wait_for(lambda: server.ctx.calls.get(call_sid(10)) is not None)
        runner = server.ctx.calls.get(call_sid(10))
        assert runner.call.from_number == CALLER and runner.call.direction == "inbound"
        # The greeting arrives as µ-law audio followed by a mark, which "playback" echoes.
        async with asyncio.timeout(20):
            while not twilio.echoed:
                await twilio.pump(0.1)
        assert len(twilio.audio) > 8000 * 1.0  # over a second of greeting
        assert twilio.marks[0] == twilio.echoed[0]
        await twilio.dtmf("5")
        await twilio.pump(0.2)
        await twilio.stop()
        assert await twilio.drain_until_closed() == 1000
    await wait_for(lambda: len(logs.events("twilio_stream_ended")) == 1)
    assert runner.ended and len(server.ctx.calls) == 0
    (ended,) = logs.events("twilio_stream_ended")
    assert ended["call_id"] == call_sid(10) and ended["reason"] == "caller hung up"
    assert ended["media_frames_in"] == twilio.chunk
    assert ended["audio_bytes_in"] == twilio.chunk * len(SILENCE)
    assert runner.turns == []  # silence is not a turn


@pytest.mark.slow
async def test_caller_speech_gets_an_answer_over_the_stream(server: Running) -> None:
    """Phone audio in, through whisper, the scripted agent and eSpeak, and back out."""
    from app.providers.local_tts import render

    params = await admitted_call(server, 14)
    speech = render("Hello. I would like to book an appointment, please.", MULAW_8K)
    async with media_socket(server) as ws:
        twilio = FakeTwilio(ws, 14)
        await twilio.open(params)
        async with asyncio.timeout(20):
            while not twilio.echoed:  # let the greeting play out, as a polite caller would
                await twilio.pump(0.1)
        await twilio.pump(0.5)
        greeting = len(twilio.audio)
        runner = server.ctx.calls.get(call_sid(14))
        for i in range(0, len(speech), 160):  # 20 ms frames in real time
            await twilio.media(speech[i : i + 160])
            await twilio.read_available()
            await asyncio.sleep(0.02)
        async with asyncio.timeout(30):
            while not runner.turns or len(twilio.audio) <= greeting:
                await twilio.pump(0.1)
        assert runner.turns[0].first_audio_sent is not None
        assert [line.role for line in runner.transcript][:2] == ["agent", "caller"]
        await twilio.stop()
        assert await twilio.drain_until_closed() == 1000


async def test_agent_hangup_closes_the_socket_normally(server: Running, logs: LogLines) -> None:
    params = await admitted_call(server, 11)
    async with media_socket(server) as ws:
        twilio = FakeTwilio(ws, 11)
        await twilio.open(params)
        await wait_for(lambda: server.ctx.calls.get(call_sid(11)) is not None)
        await twilio.pump(0.3)
        heard = len(twilio.audio)
        server.ctx.calls.get(call_sid(11)).shutdown("test drain")  # goodbye, then hang up
        assert await twilio.run_until_closed() == 1000
        assert len(twilio.audio) > heard  # the goodbye was sent before the socket closed
    await wait_for(lambda: len(logs.events("twilio_stream_ended")) == 1)
    assert len(server.ctx.calls) == 0
    (ended,) = logs.events("twilio_stream_ended")
    assert ended["reason"] == "call ended"


@pytest.mark.parametrize("case", ["other-call", "expired", "missing", "tampered"])
async def test_bad_stream_token_closes_the_stream(
    server: Running, logs: LogLines, case: str
) -> None:
    params = await admitted_call(server, 12)
    tokens = StreamTokens.from_auth_token(AUTH, 60)
    if case == "other-call":
        params["token"] = tokens.issue(call_sid(99), time.time())
    elif case == "expired":
        params["token"] = tokens.issue(call_sid(12), time.time() - 3600)
    elif case == "missing":
        del params["token"]
    else:
        params["token"] = params["token"][:-2] + (
            "AA" if not params["token"].endswith("AA") else "BB"
        )
    async with media_socket(server) as ws:
        twilio = FakeTwilio(ws, 12)
        await twilio.open(params)
        assert await twilio.drain_until_closed() == 1008
    assert len(server.ctx.calls) == 0
    (refused,) = logs.events("twilio_stream_refused")
    expected = {
        "other-call": "bad signature",
        "expired": "expired",
        "missing": "missing",
        "tampered": "bad signature",
    }[case]
    assert refused["reason"] == f"token {expected}"
    assert refused["call_id"] == call_sid(12)


async def test_replayed_start_for_a_live_call_is_refused(server: Running) -> None:
    params = await admitted_call(server, 13)
    async with media_socket(server) as first:
        a = FakeTwilio(first, 13)
        await a.open(params)
        await wait_for(lambda: server.ctx.calls.get(call_sid(13)) is not None)
        async with media_socket(server) as second:
            b = FakeTwilio(second, 13)
            await b.open(params)
            assert await b.drain_until_closed() == 1008
        await a.pump(0.2)
        assert first.close_code is None
        await a.stop()
        assert await a.drain_until_closed() == 1000


@pytest.mark.parametrize(
    "bad",
    [
        "binary",
        "not json",
        "out-of-order",
        "other-stream",
        "oversized",
    ],
)
async def test_malformed_frame_closes_only_its_own_call(
    server: Running, logs: LogLines, bad: str
) -> None:
    good_params = await admitted_call(server, 20)
    bad_params = await admitted_call(server, 21)
    async with media_socket(server) as ws_a, media_socket(server) as ws_b:
        a, b = FakeTwilio(ws_a, 20), FakeTwilio(ws_b, 21)
        await a.open(good_params)
        await b.open(bad_params)
        await wait_for(lambda: len(server.ctx.calls) == 2)
        await a.pump(0.3)
        await b.pump(0.3)
        if bad == "binary":
            await ws_b.send(b"\x00\x01")
        elif bad == "not json":
            await ws_b.send("{nope")
        elif bad == "out-of-order":
            b.seq -= 1  # a repeated sequence number
            await b.media()
        elif bad == "other-stream":
            b.stream = stream_sid(77)
            await b.media()
        else:
            await b.media(b"\x00" * 20_000)
        b.stream = stream_sid(21)
        assert await b.drain_until_closed() == 1002
        await wait_for(lambda: server.ctx.calls.get(call_sid(21)) is None)
        # The other call carries on: every frame it sends is still consumed, and the agent's
        # voice still reaches it (a drain makes the agent say goodbye and hang up).
        await a.pump(0.5)
        assert ws_a.close_code is None
        runner_a = server.ctx.calls.get(call_sid(20))
        assert runner_a is not None and not runner_a.ended
        heard = len(a.audio)
        runner_a.shutdown("test drain")
        assert await a.run_until_closed() == 1000
        assert len(a.audio) > heard
    await wait_for(lambda: len(logs.events("twilio_stream_ended")) == 2)
    (error,) = logs.events("twilio_stream_protocol_error")
    assert error["call_id"] == call_sid(21) and error["level"] == "warning"
    ended = {e["call_id"]: e for e in logs.events("twilio_stream_ended")}
    assert ended[call_sid(21)]["reason"] == "protocol error"
    assert ended[call_sid(20)]["reason"] == "call ended"
    assert ended[call_sid(20)]["media_frames_in"] == a.chunk


async def test_stream_without_start_times_out(
    server: Running, logs: LogLines, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "START_TIMEOUT_S", 0.3)
    async with media_socket(server) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                await ws.recv()
        assert ws.close_code == 1002
    (error,) = logs.events("twilio_stream_protocol_error")
    assert "no start within" in error["error"]


async def test_the_fallback_url_apologises_and_logs_twilios_error(
    providers: Providers, logs: LogLines
) -> None:
    settings = make_settings()
    settings = dataclasses.replace(
        settings, ops=dataclasses.replace(settings.ops, overflow_number="+14155550100")
    )
    async with serve(AppContext(settings, providers, PhraseCache())) as srv:
        url = f"http://127.0.0.1:{srv.port}/twilio/fallback"
        fields = form(call_sid(9), ErrorCode="11200", ErrorUrl=srv.voice_url)
        forged = await post_voice(url, fields, sign(url, fields, token="not-the-token"))
        assert forged.status_code == 403
        resp = await post_voice(url, fields, sign(url, fields))
    assert resp.status_code == 200
    root = ET.fromstring(resp.text)
    assert [c.tag for c in root] == ["Say", "Dial"]
    assert root.find("Dial").text == "+14155550100"
    (logged,) = logs.events("twilio_fallback")
    assert logged["error_code"] == "11200" and logged["call_id"] == call_sid(9)
