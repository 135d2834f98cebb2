"""Deepgram adapter: the real SDK client against the wire-compatible fake on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from app.core.audio import MULAW_8K, AudioChunk, pcm16_to_mulaw
from app.core.providers import (
    CallInfo,
    SpeechStarted,
    SttEvent,
    SttFailure,
    Transcript,
    UtteranceEnd,
)
from app.logs import JsonFormatter
from app.providers.deepgram import (
    DeepgramError,
    DeepgramOptions,
    DeepgramStt,
    ReplayBuffer,
    environment_for,
)
from tests.fakes import tonecode
from tests.fakes.deepgram_server import DeepgramFake, ListenEngine, ListenOptions

KEY = "dg-secret-key-1234"
CALL = CallInfo(call_id="CA-deepgram-test", transport="twilio")
SENTENCE = "i would like to book a cleaning on tuesday"


def mulaw(text: str, pause_ms: float = 1500) -> bytes:
    return pcm16_to_mulaw(tonecode.encode(text) + tonecode.silence(pause_ms))


async def feed(stream, data: bytes, chunk: int = 160) -> None:
    for i in range(0, len(data), chunk):
        await stream.send(AudioChunk(data[i : i + chunk], MULAW_8K))


async def collect(stream, until, within: float = 5.0) -> list[SttEvent]:
    got: list[SttEvent] = []

    async def run() -> None:
        async for ev in stream.events():
            got.append(ev)
            if until(ev):
                return

    await asyncio.wait_for(run(), within)
    return got


@pytest.fixture
async def fake():
    async with DeepgramFake(api_key=KEY) as server:
        yield server


def stt(fake: DeepgramFake, **opts) -> DeepgramStt:
    return DeepgramStt(KEY, fake.ws_url, DeepgramOptions(**opts))


# --------------------------------------------------------------------------- pure parts


def test_replay_buffer_keeps_only_unsettled_audio():
    buf = ReplayBuffer(bytes_per_second=8000, max_seconds=10)
    buf.append(b"a" * 8000 + b"b" * 8000)
    buf.mark_sent(12000)
    buf.settle(1.0)  # first second settled by a final result
    assert buf.acked == 8000 and bytes(buf.data) == b"b" * 8000
    assert buf.restart() == 8000  # new socket: replay the second second from its start
    assert buf.unsent(100) == b"b" * 100
    buf.mark_sent(8000)
    buf.settle(0.5)  # new socket's clock starts at the replayed audio
    assert buf.acked == 12000 and len(buf.data) == 4000


def test_replay_buffer_is_bounded():
    buf = ReplayBuffer(bytes_per_second=8000, max_seconds=1)
    buf.append(bytes(20000))
    assert len(buf.data) == 8000 and buf.dropped == 12000 and buf.sent == buf.acked


def test_environment_derives_rest_base_from_websocket_url():
    env = environment_for("ws://127.0.0.1:9/")
    assert (env.production, env.base) == ("ws://127.0.0.1:9", "http://127.0.0.1:9")
    assert environment_for(None).base == "https://api.deepgram.com"
    with pytest.raises(ValueError, match="DEEPGRAM_URL"):
        environment_for("https://api.deepgram.com")


def test_fake_engine_endpoints_on_audio_time():
    engine = ListenEngine(ListenOptions("mulaw", 8000, True, 300, 1000, True), interim_every_ms=300)
    out = engine.feed(mulaw("hello there", pause_ms=1200))
    kinds = [
        getattr(o, "body", {}).get("type") or ("final" if o.is_final else "interim") for o in out
    ]
    assert kinds[0] == "SpeechStarted" and "interim" in kinds
    assert kinds[-2:] == ["final", "UtteranceEnd"]
    final = out[-2]
    assert tonecode.decode(final.audio) == "hello there" and final.speech_final


# --------------------------------------------------------------------------- real sockets


async def test_phone_audio_goes_straight_through_and_is_transcribed(fake):
    recogniser = stt(fake, early_end_ms=0)  # the whole 300 ms: one utterance, one final
    assert recogniser.confirm_ms == 0
    stream = await recogniser.open(CALL)
    try:
        await feed(stream, mulaw(SENTENCE))
        events = await collect(stream, lambda e: isinstance(e, UtteranceEnd))
    finally:
        await stream.aclose()
    q = fake.queries[0]
    assert {k: v[0] for k, v in q.items() if k != "model"} | {"model": q["model"][0]} == {
        "model": "nova-3",
        "encoding": "mulaw",
        "sample_rate": "8000",
        "channels": "1",
        "interim_results": "true",
        "endpointing": "300",
        "utterance_end_ms": "1000",
        "vad_events": "true",
        "smart_format": "true",
    }
    assert isinstance(events[0], SpeechStarted)
    interims = [e for e in events if isinstance(e, Transcript) and not e.is_final]
    finals = [e for e in events if isinstance(e, Transcript) and e.is_final]
    assert interims and SENTENCE.startswith(interims[0].text.split()[0])
    assert [f.text for f in finals] == [SENTENCE] and finals[0].speech_final
    assert isinstance(events[-1], UtteranceEnd)
    # µ-law went through untouched: the fake got exactly the bytes we sent
    assert fake.audio_bytes[0] == len(mulaw(SENTENCE))
    assert stream.audio_seconds == pytest.approx(len(mulaw(SENTENCE)) / 8000)


async def test_by_default_utterances_end_early_and_the_session_confirms_the_rest(fake):
    """Deepgram is asked for 75 ms endpointing so a speculative reply can start; the session
    waits out the other 225 ms itself (``confirm_ms``). Short pauses now end utterances."""
    recogniser = stt(fake)
    assert recogniser.confirm_ms == 225
    stream = await recogniser.open(CALL)
    try:
        await feed(stream, mulaw("ok then"))
        events = await collect(stream, lambda e: isinstance(e, UtteranceEnd))
    finally:
        await stream.aclose()
    assert fake.queries[0]["endpointing"] == ["75"]
    finals = [e for e in events if isinstance(e, Transcript) and e.is_final]
    assert " ".join(f.text for f in finals) == "ok then" and finals[-1].speech_final


async def test_socket_dropped_mid_utterance_still_transcribed(fake):
    fake.drop_after_ms = 1200  # the sentence lasts ~2.6 s: the drop cuts it in the middle
    stream = await stt(fake, early_end_ms=0).open(CALL)
    try:
        await feed(stream, mulaw("hello", pause_ms=600))
        await collect(stream, lambda e: isinstance(e, Transcript) and e.is_final)  # settled
        await feed(stream, mulaw(SENTENCE))
        events = await collect(
            stream, lambda e: isinstance(e, Transcript) and e.is_final and "tuesday" in e.text
        )
    finally:
        await stream.aclose()
    finals = [e.text for e in events if isinstance(e, Transcript) and e.is_final]
    assert finals == [SENTENCE]
    assert fake.connections == 2 and stream.reconnects == 1
    # only the unsettled audio was replayed, not the settled first word
    assert 0 < stream.replayed_bytes < len(mulaw(SENTENCE)) + 600 * 8


async def test_keepalive_while_no_audio_is_sent(fake):
    stream = await stt(fake, keepalive_s=0.3).open(CALL)
    try:
        await asyncio.sleep(1.1)
    finally:
        await stream.aclose()
    assert fake.keepalives >= 2


async def test_bad_key_fails_fast_and_clearly(fake):
    started = time.monotonic()
    with pytest.raises(DeepgramError, match="401"):
        await DeepgramStt("wrong-key", fake.ws_url).open(CALL)
    assert time.monotonic() - started < 1.0


async def test_reconnect_retries_a_busy_service(fake):
    fake.reject_connects = 2  # two 503s, then it accepts
    stream = await stt(fake, early_end_ms=0).open(CALL)
    try:
        await feed(stream, mulaw("ok then"))
        events = await collect(stream, lambda e: isinstance(e, Transcript) and e.is_final)
    finally:
        await stream.aclose()
    assert [e.text for e in events if isinstance(e, Transcript) and e.is_final] == ["ok then"]


async def test_gives_up_with_fatal_failure_when_service_stays_down(fake):
    stream = await stt(fake, reconnect_budget_s=0.5).open(CALL)
    fake.reject_connects = 1000
    fake.drop_after_ms = 100
    try:
        started = time.monotonic()
        await feed(stream, mulaw("anyone there"))
        events = await collect(stream, lambda e: isinstance(e, SttFailure), within=3)
    finally:
        await stream.aclose()
    assert isinstance(events[-1], SttFailure) and events[-1].fatal
    assert time.monotonic() - started < 1.5


async def test_no_key_or_transcript_in_logs(fake, caplog):
    caplog.set_level(logging.DEBUG)
    fake.drop_after_ms = 500
    stream = await stt(fake).open(CALL)
    try:
        await feed(stream, mulaw(SENTENCE))
        await collect(stream, lambda e: isinstance(e, UtteranceEnd))
    finally:
        await stream.aclose()
    lines = [JsonFormatter().format(r) for r in caplog.records]
    assert any("stt_reconnected" in line for line in lines)
    for line in lines:
        assert KEY not in line and "cleaning" not in line


async def test_audio_socket_is_opened_without_compression(fake):
    # µ-law does not compress; deflating every 20 ms frame only costs CPU
    stream = await stt(fake).open(CallInfo("CAnocompress", "twilio"))  # returns once connected
    try:
        assert fake.extensions == [""]
    finally:
        await stream.aclose()
