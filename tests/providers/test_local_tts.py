from __future__ import annotations

import asyncio
import time

import pytest

from app.config import LocalProviderSettings
from app.core.audio import (
    CANONICAL,
    MULAW_8K,
    PCM_8K,
    PCM_48K,
    AudioChunk,
    AudioFormat,
    Encoding,
    rms_dbfs,
    to_pcm16,
)
from app.providers import local_tts
from app.providers.local_tts import EspeakTts, TtsError, render

SENTENCE = "I'd like to book an appointment tomorrow at ten."


def close(a: int, b: int, tolerance: float = 0.05) -> bool:
    return abs(a - b) <= tolerance * max(a, b)


async def collect(tts: EspeakTts, text: str, fmt: AudioFormat) -> list[AudioChunk]:
    return [chunk async for chunk in tts.synthesize(text, fmt)]


@pytest.mark.parametrize("fmt", [MULAW_8K, CANONICAL, PCM_8K, PCM_48K])
def test_render_gives_speech_of_the_expected_length_in_each_format(fmt: AudioFormat) -> None:
    data = render(SENTENCE, fmt)
    # eSpeak at 175 wpm says this sentence in about 2.5 s.
    assert 2000 < fmt.duration_ms(len(data)) < 3000
    assert len(data) % fmt.sample_width == 0
    level = rms_dbfs(to_pcm16(data, fmt.encoding))
    assert level > -35  # speech, not silence


def test_formats_agree_on_duration() -> None:
    ms = {fmt: fmt.duration_ms(len(render(SENTENCE, fmt))) for fmt in EspeakTts.formats}
    assert max(ms.values()) - min(ms.values()) < 5


def test_faster_rate_gives_shorter_audio() -> None:
    slow = render(SENTENCE, CANONICAL, rate_wpm=120)
    fast = render(SENTENCE, CANONICAL, rate_wpm=300)
    assert len(fast) < len(slow) * 0.6


def test_empty_text_renders_nothing_and_bad_input_is_refused() -> None:
    assert render("   ", MULAW_8K) == b""
    with pytest.raises(TtsError, match="unknown eSpeak voice"):
        render("Hello.", CANONICAL, voice="no-such-voice")
    with pytest.raises(TtsError, match="too long"):
        render("word " * 2000, CANONICAL)
    # the engine is still usable after a refused voice
    assert len(render("Hello.", CANONICAL)) > 0


async def test_synthesize_streams_100ms_chunks_that_add_up_to_the_clip() -> None:
    tts = EspeakTts()
    chunks = await collect(tts, SENTENCE, MULAW_8K)
    assert len(chunks) >= 20
    assert all(c.format == MULAW_8K for c in chunks)
    assert all(c.duration_ms == 100 for c in chunks[:-1])
    assert 0 < chunks[-1].duration_ms <= 100
    # eSpeak varies its voice slightly from run to run, so compare lengths, not bytes.
    assert close(sum(len(c) for c in chunks), len(render(SENTENCE, MULAW_8K)))


async def test_synthesize_uses_settings_and_refuses_other_formats() -> None:
    tts = EspeakTts(LocalProviderSettings(espeak_rate_wpm=300))
    fast = sum(len(c) for c in await collect(tts, SENTENCE, CANONICAL))
    assert close(fast, len(render(SENTENCE, CANONICAL, rate_wpm=300)))
    assert fast < 0.8 * len(render(SENTENCE, CANONICAL))
    with pytest.raises(ValueError, match="cannot produce"):
        await collect(tts, SENTENCE, AudioFormat(Encoding.PCM16, 44_100))


async def test_concurrent_synthesis_does_not_mix_calls() -> None:
    tts = EspeakTts()
    # Lengths differ a lot, so audio of one call leaking into another would show.
    texts = ["Yes.", SENTENCE, "No.", SENTENCE + " " + SENTENCE, "Thank you, goodbye."] * 2
    results = await asyncio.gather(*(collect(tts, t, CANONICAL) for t in texts))
    for text, chunks in zip(texts, results, strict=True):
        assert close(sum(len(c) for c in chunks), len(render(text, CANONICAL)))


async def test_synthesis_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = local_tts._get_engine()
    real = type(engine).render

    def slow_render(self, text, voice, rate_wpm):  # type: ignore[no-untyped-def]
        time.sleep(0.3)  # a slow synthesis must not stall other calls on the loop
        return real(self, text, voice, rate_wpm)

    monkeypatch.setattr(type(engine), "render", slow_render)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    try:
        chunks = await collect(EspeakTts(), SENTENCE, MULAW_8K)
    finally:
        stop.set()
        await task
    assert chunks
    assert len(gaps) >= 15  # the loop kept ticking during the 0.3 s synthesis
    assert max(gaps) < 0.1


def test_warm_loads_the_library() -> None:
    EspeakTts().warm()
    assert local_tts._engine is not None
    assert local_tts._engine.sample_rate == 22050
