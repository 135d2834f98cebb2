"""ElevenLabs adapter: the real SDK client against the wire-compatible fake on 127.0.0.1."""

from __future__ import annotations

import logging
import time

import pytest

from app.core.audio import CANONICAL, MULAW_8K, PCM_48K, Encoding, to_pcm16
from app.logs import JsonFormatter
from app.providers.elevenlabs import ElevenLabsOptions, ElevenLabsTts, TtsError
from tests.fakes import tonecode
from tests.fakes.asgi import LoopbackServer
from tests.fakes.elevenlabs_server import ElevenLabsFake

KEY = "xi-secret-key-9012"
VOICE = "21m00Tcm4TlvDq8ikWAM"
TEXT = "Your cleaning is booked for Tuesday at ten"


@pytest.fixture
async def fake():
    fake = ElevenLabsFake(api_key=KEY)
    async with LoopbackServer(fake.app()) as srv:
        fake.url = srv.url  # type: ignore[attr-defined]
        yield fake


async def speak(fake, text=TEXT, fmt=MULAW_8K, key=KEY, **opts):
    tts = ElevenLabsTts(key, VOICE, base_url=fake.url, options=ElevenLabsOptions(**opts))
    try:
        return [c async for c in tts.synthesize(text, fmt)], tts
    finally:
        await tts.aclose()


def heard(chunks) -> str:
    fmt = chunks[0].format
    pcm = to_pcm16(b"".join(c.data for c in chunks), fmt.encoding)
    return tonecode.decode(pcm, fmt.sample_rate)


async def test_phone_audio_is_ulaw_8000_passed_straight_through(fake):
    chunks, tts = await speak(fake)
    assert tts.formats[0] == MULAW_8K
    assert all(c.format == MULAW_8K for c in chunks) and len(chunks) > 1  # streamed
    assert heard(chunks) == tonecode.normalise(TEXT)
    sent = fake.requests[0]
    assert sent["query"]["output_format"] == "ulaw_8000"
    assert sent["model_id"] == "eleven_flash_v2_5" and sent["voice_id"] == VOICE
    assert sent["text"] == TEXT and tts.characters == len(TEXT)


@pytest.mark.parametrize(("fmt", "name"), [(CANONICAL, "pcm_16000"), (PCM_48K, "pcm_48000")])
async def test_pcm_at_the_rate_the_transport_needs(fake, fmt, name):
    chunks, _ = await speak(fake, fmt=fmt)
    assert fake.requests[0]["query"]["output_format"] == name
    assert all(c.format == fmt and len(c.data) % 2 == 0 for c in chunks)
    assert fmt.encoding is Encoding.PCM16 and heard(chunks) == tonecode.normalise(TEXT)


async def test_500_is_retried_within_budget(fake):
    fake.faults = ["500", "429"]
    started = time.monotonic()
    chunks, _ = await speak(fake)
    assert heard(chunks) == tonecode.normalise(TEXT) and len(fake.requests) == 3
    assert time.monotonic() - started < 0.5  # not the SDK's 1 s+ back-off


async def test_persistent_500_raises_within_budget(fake):
    fake.faults = ["500"] * 100
    started = time.monotonic()
    with pytest.raises(TtsError, match="HTTP 500"):
        await speak(fake, retry_budget_s=0.6)
    assert time.monotonic() - started < 0.8 and len(fake.requests) == 3


async def test_slow_first_audio_is_retried_then_raises(fake):
    fake.faults = ["stall"] * 5
    fake.stall_s = 5
    started = time.monotonic()
    with pytest.raises(TtsError, match="no audio"):
        await speak(fake, first_chunk_timeout_s=0.3, retry_budget_s=0.8)
    assert 0.7 < time.monotonic() - started < 1.1


async def test_body_cut_after_audio_started_raises_without_repeating(fake):
    fake.faults = ["drop"]
    tts = ElevenLabsTts(KEY, VOICE, base_url=fake.url)
    got = []
    with pytest.raises(TtsError):
        async for chunk in tts.synthesize(TEXT, MULAW_8K):
            got.append(chunk)
    await tts.aclose()
    assert got and len(fake.requests) == 1  # no retry once the caller heard something


async def test_bad_key_is_not_retried(fake):
    with pytest.raises(TtsError, match="401"):
        await speak(fake, key="wrong-key-123")
    assert fake.requests == []


async def test_no_key_or_text_in_logs(fake, caplog):
    caplog.set_level(logging.DEBUG)
    fake.faults = ["500"]
    await speak(fake, text="Goodbye Zebulon Quartermaine")
    lines = [JsonFormatter().format(r) for r in caplog.records]
    assert any("tts_error" in line for line in lines)
    for line in lines:
        assert KEY not in line and "Zebulon" not in line
