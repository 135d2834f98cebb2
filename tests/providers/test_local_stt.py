"""The local recogniser on phone-like audio: eSpeak -> 8 kHz µ-law -> 16 kHz, in 20 ms chunks."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from app.core.audio import CANONICAL, MULAW_8K, AudioChunk, Converter
from app.core.providers import (
    CallInfo,
    SpeechStarted,
    SttEvent,
    SttFailure,
    SttStream,
    Transcript,
    UtteranceEnd,
)
from app.providers.local_stt import WhisperEngine, WhisperStream, WhisperStt, is_hallucination
from app.providers.local_tts import render

CALL = CallInfo(call_id="CAtest", transport="twilio")
MULAW_SILENCE = b"\xff"  # µ-law code for 0


def silence(ms: int) -> bytes:
    return MULAW_SILENCE * MULAW_8K.bytes_for_ms(ms)


def phone_audio(*parts: str | int) -> bytes:
    """Caller audio as Twilio delivers it: text is spoken by eSpeak, numbers are ms of silence."""
    return b"".join(silence(p) if isinstance(p, int) else render(p, MULAW_8K) for p in parts)


async def feed(stream: SttStream, mulaw: bytes) -> None:
    """Like a call: 20 ms µ-law frames, converted to the recogniser's 16 kHz PCM as they come."""
    conv = Converter(MULAW_8K, CANONICAL)
    for i in range(0, len(mulaw), 160):
        await stream.send(AudioChunk(conv.convert(mulaw[i : i + 160]), CANONICAL))


async def run_call(stt: WhisperStt, mulaw: bytes, **stream_options: Any) -> list[SttEvent]:
    # On a busy machine several transcriptions can take longer than the default wait at close.
    stream = WhisperStream(stt.engine, CALL, close_timeout_s=60, **stream_options)
    events: list[SttEvent] = []

    async def read() -> None:
        async for e in stream.events():
            events.append(e)

    reader = asyncio.create_task(read())
    try:
        await feed(stream, mulaw)
        await stream.aclose()
        await asyncio.wait_for(reader, 60)
    finally:
        reader.cancel()
    return events


def words(text: str) -> set[str]:
    return set(text.lower().replace(".", " ").replace(",", " ").replace("?", " ").split())


@pytest.mark.slow
async def test_two_utterances_round_trip_in_order(whisper_stt: WhisperStt) -> None:
    stream = await whisper_stt.open(CALL)
    events = stream.events()
    try:
        # The caller speaks, then waits for an answer before speaking again.
        await feed(stream, phone_audio(500, "I need to cancel my appointment on Thursday.", 800))
        first = [await asyncio.wait_for(anext(events), 30) for _ in range(2)]
        await feed(stream, phone_audio("My name is Maria Garcia.", 800))
        second = [await asyncio.wait_for(anext(events), 30) for _ in range(2)]
    finally:
        await stream.aclose()
    assert [type(e) for e in first + second] == [SpeechStarted, Transcript] * 2
    assert [e async for e in events] == []  # closed: nothing more
    one, two = first[1], second[1]
    assert isinstance(one, Transcript) and isinstance(two, Transcript)
    assert one.is_final and one.speech_final and two.is_final and two.speech_final
    assert {"cancel", "appointment", "thursday"} <= words(one.text)
    assert {"name", "maria", "garcia"} <= words(two.text)


async def test_fast_feed_keeps_each_start_before_its_transcript(whisper_stt: WhisperStt) -> None:
    audio = phone_audio(300, "Yes, that's right.", 700, "Tomorrow at ten.", 700)
    events = await run_call(whisper_stt, audio)
    starts = 0
    for n, e in enumerate(events):
        starts += isinstance(e, SpeechStarted)
        if isinstance(e, Transcript):
            assert starts >= sum(isinstance(x, Transcript) for x in events[: n + 1])
    assert starts == 2
    assert [words(e.text) for e in events if isinstance(e, Transcript)][0] >= {"yes", "right"}


@pytest.mark.slow
async def test_booking_sentence_keeps_day_and_time(whisper_stt: WhisperStt) -> None:
    events = await run_call(whisper_stt, phone_audio(300, "Can I move it to Friday at 3 pm?", 700))
    transcripts = [e for e in events if isinstance(e, Transcript)]
    assert len(transcripts) == 1
    text = transcripts[0].text.lower()
    assert "friday" in text and "3" in text and ("p.m." in text or "pm" in text)


async def test_silence_and_line_noise_give_no_events(whisper_stt: WhisperStt) -> None:
    rng = np.random.default_rng(7)
    hiss = (rng.normal(0, 40, 8000 * 3)).astype(np.int16)  # about -58 dBFS line hiss
    from app.core.audio import pcm16_to_mulaw

    audio = silence(2000) + pcm16_to_mulaw(hiss.tobytes()) + silence(1000)
    assert await run_call(whisper_stt, audio) == []


@pytest.mark.slow
async def test_close_mid_speech_transcribes_what_was_said(whisper_stt: WhisperStt) -> None:
    events = await run_call(whisper_stt, phone_audio(300, "My name is Maria Garcia."))
    assert [type(e) for e in events] == [SpeechStarted, Transcript]
    assert "garcia" in words(events[1].text)  # type: ignore[union-attr]


@pytest.mark.slow
async def test_long_speech_is_cut_at_the_cap_and_goes_on(whisper_stt: WhisperStt) -> None:
    audio = phone_audio(300, "I'd like to book an appointment for a cleaning next Monday.", 700)
    events = await run_call(whisper_stt, audio, max_utterance_s=1.5)
    transcripts = [e for e in events if isinstance(e, Transcript)]
    assert isinstance(events[0], SpeechStarted)
    assert events.count(SpeechStarted()) == 1  # one utterance, cut in pieces
    assert all(t.is_final for t in transcripts)
    pieces, last = events[1:-1], events[-1]
    assert pieces and all(isinstance(e, Transcript) and not e.speech_final for e in pieces)
    # The utterance ends with its last piece's words, or, if that piece held no words (the cut
    # can leave a fragment), with UtteranceEnd.
    assert last == UtteranceEnd() or isinstance(last, Transcript) and last.speech_final
    assert "appointment" in words(" ".join(t.text for t in transcripts))


async def test_quiet_speech_is_ignored(whisper_stt: WhisperStt) -> None:
    # Speech far below a phone line's level: the VAD hears it, the level gate drops it, and no
    # SpeechStarted goes out (it would interrupt the agent).
    quiet = np.frombuffer(render("Hello there, how are you?", CANONICAL), np.int16) * 0.004
    stream = WhisperStream(whisper_stt.engine, CALL)
    await stream.send(AudioChunk(bytes(16_000), CANONICAL))
    pcm = quiet.astype(np.int16).tobytes() + bytes(32_000)
    for i in range(0, len(pcm), 640):
        await stream.send(AudioChunk(pcm[i : i + 640], CANONICAL))
    await stream.aclose()
    events = [e async for e in stream.events()]
    assert events == []


async def test_full_transcription_queue_reports_a_failure_and_goes_on() -> None:
    # max_pending=0: every segment is refused before the model is needed.
    engine = WhisperEngine("unused-model-path", threads=1, max_pending=0)
    stream = WhisperStream(engine, CALL)
    await feed(stream, phone_audio(300, "Hello, I would like an appointment.", 700))
    await stream.aclose()
    events = [e async for e in stream.events()]
    assert events[0] == SpeechStarted()
    assert isinstance(events[1], SttFailure) and not events[1].fatal
    assert "queue full" in events[1].reason


async def test_stream_contract(whisper_stt: WhisperStt) -> None:
    stream = await whisper_stt.open(CALL)
    assert isinstance(stream, SttStream)
    with pytest.raises(ValueError, match="expects"):
        await stream.send(AudioChunk(silence(20), MULAW_8K))
    await stream.aclose()
    await stream.aclose()  # twice is fine
    await stream.send(AudioChunk(bytes(640), CANONICAL))  # after close: ignored
    assert [e async for e in stream.events()] == []


async def test_missing_model_is_a_clear_error() -> None:
    stt = WhisperStt(model_path="/nonexistent-model-dir")
    with pytest.raises(Exception, match="WHISPER_MODEL_PATH"):
        stt.warm()


@pytest.mark.parametrize(
    ("text", "dropped"),
    [
        ("Thank you for watching.", True),
        ("Thanks for watching!", True),
        (" you", True),
        ("...", True),
        ("[BLANK_AUDIO]", True),
        ("Thank you.", False),
        ("Yes.", False),
        ("I'd like to book an appointment.", False),
    ],
)
def test_hallucination_filter(text: str, dropped: bool) -> None:
    assert is_hallucination(text) is dropped


async def test_too_short_a_sound_ends_the_utterance_without_words(whisper_stt: WhisperStt) -> None:
    # A cough-length burst: loud enough to announce, too short to be words.
    speech = np.frombuffer(render("Ah.", CANONICAL), np.int16)
    voiced = np.nonzero(np.abs(speech) > 500)[0][0]
    burst = speech[voiced : voiced + 16 * 100].tobytes()
    stream = WhisperStream(whisper_stt.engine, CALL, min_speech_ms=300)
    for pcm in (bytes(16_000), burst, bytes(32_000)):
        await stream.send(AudioChunk(pcm, CANONICAL))
    await stream.aclose()
    assert [e async for e in stream.events()] == [SpeechStarted(), UtteranceEnd()]


async def test_audio_between_utterances_is_not_kept() -> None:
    # A long call must not grow the stream's buffer: only the pre-roll window is kept.
    engine = WhisperEngine("unused-model-path", threads=1, max_pending=0)
    stream = WhisperStream(engine, CALL)
    await feed(stream, silence(20_000))
    assert CANONICAL.duration_ms(len(stream._buf)) <= 2000
    await stream.aclose()


LONG_TURN = (
    300,
    "I have a question about my bill.",
    300,
    "I was charged twice last month for the same cleaning,",
    300,
    "and I would like to know who I should talk to about a refund.",
    800,
)


class CountingEngine(WhisperEngine):
    """The real engine's queue and thread with a stand-in model: each decode says how much
    audio it was given ("1234ms"), so a test sees what was decoded when."""

    def __init__(self, fail_first: bool = False) -> None:
        super().__init__("unused-model-path", threads=1)
        self.decoded: list[float] = []
        self.fail_first = fail_first

    def load(self) -> None:
        pass

    def _run(self, model: object, audio: np.ndarray) -> str:
        if self.fail_first and not self.decoded:
            self.decoded.append(0.0)
            raise RuntimeError("model failed")
        ms = len(audio) / 16
        self.decoded.append(ms)
        return f"{round(ms)}ms"


async def events_of(stream: WhisperStream, mulaw: bytes) -> list[SttEvent]:
    await feed(stream, mulaw)
    await stream.aclose()
    return [e async for e in stream.events()]


@pytest.mark.slow
async def test_a_long_turn_is_transcribed_in_pieces_while_the_caller_speaks(
    whisper_stt: WhisperStt,
) -> None:
    events = await run_call(whisper_stt, phone_audio(*LONG_TURN))
    interims = [e for e in events if isinstance(e, Transcript) and not e.is_final]
    finals = [e for e in events if isinstance(e, Transcript) and e.is_final]
    assert isinstance(events[0], SpeechStarted) and events.count(SpeechStarted()) == 1
    assert len(finals) == 1 and finals[0].speech_final and events[-1] is finals[0]
    # The first phrases came back while the rest was being said, and the end holds them all.
    assert interims and {"question", "cleaning"} <= words(interims[-1].text)
    assert {"question", "cleaning", "talk"} <= words(finals[0].text)


async def test_pieces_are_cut_at_pauses_after_enough_audio_and_the_end_decodes_the_rest() -> None:
    engine = CountingEngine()
    stream = WhisperStream(engine, CALL, piece_min_ms=2500)
    events = await events_of(stream, phone_audio(*LONG_TURN))
    [final] = [e for e in events if isinstance(e, Transcript) and e.is_final]
    # The phrases are ~2.1, ~3.1 and ~3.2 s long. The first is too short to be a piece: it is
    # decoded again with the second, which makes one; the last decode holds the third alone.
    pieces = [int(w.removesuffix("ms")) for w in final.text.split()]
    assert len(pieces) == 2 and pieces[0] >= 5000
    whole = sum(pieces)
    assert pieces[-1] < whole / 2
    interims = [e.text for e in events if isinstance(e, Transcript) and not e.is_final]
    assert interims == [final.text.rsplit(" ", 1)[0]]
    # Every decode the end of speech waited for was already running or done: nothing decoded
    # the whole turn again.
    assert max(engine.decoded) < whole


async def test_short_turns_are_decoded_whole_as_before() -> None:
    engine = CountingEngine()
    stream = WhisperStream(engine, CALL)  # default: pieces of 3 s or more
    events = await events_of(stream, phone_audio(300, "No, that's everything.", 300, "Bye.", 800))
    [final] = [e for e in events if isinstance(e, Transcript)]
    assert len(final.text.split()) == 1  # one decode of the whole utterance


async def test_a_piece_the_model_failed_on_is_decoded_again_with_the_whole_turn() -> None:
    engine = CountingEngine(fail_first=True)
    stream = WhisperStream(engine, CALL, piece_min_ms=1000)
    events = await events_of(stream, phone_audio(*LONG_TURN))
    [final] = [e for e in events if isinstance(e, Transcript) and e.is_final]
    assert len(final.text.split()) == 1
    assert int(final.text.removesuffix("ms")) == max(engine.decoded)  # the whole turn
