"""Pure helpers of the core: sentence splitting, VAD segmentation, playback accounting."""

from __future__ import annotations

import pytest

from app.core.audio import CANONICAL, MULAW_8K, AudioChunk, Converter, pcm16_to_mulaw
from app.core.playback import Playback, Utterance, heard_prefix
from app.core.text import SentenceSplitter
from app.core.vad import SpeechEnd, SpeechStart, VoiceActivity

from .harness import vowel


def split_stream(pieces: list[str]) -> list[str]:
    s = SentenceSplitter()
    out: list[str] = []
    for p in pieces:
        out += s.push(p)
    return out + s.flush()


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["Hello there. How", " are you?"], ["Hello there.", "How are you?"]),
        (["See Dr. Lee at 10.30 tomorrow. Ok?"], ["See Dr. Lee at 10.30 tomorrow.", "Ok?"]),
        (["It is at 10 a.m. tomorrow. Fine?"], ["It is at 10 a.m. tomorrow.", "Fine?"]),
        (["Great! ", "Booked."], ["Great!", "Booked."]),
        (
            [
                "We have slots on Monday, Tuesday, Wednesday, Thursday and Friday, mornings, "
                "afternoons and some evenings as well"
            ],
            [
                "We have slots on Monday, Tuesday, Wednesday, Thursday and Friday, mornings,",
                "afternoons and some evenings as well",
            ],
        ),
    ],
)
def test_sentence_splitter(pieces: list[str], expected: list[str]) -> None:
    assert split_stream(pieces) == expected


def test_splitter_waits_for_the_next_word_before_releasing() -> None:
    s = SentenceSplitter()
    assert s.push("It is 10.") == []  # could be 10.30
    assert s.push("30 now. N") == ["It is 10.30 now."]


def test_first_piece_leaves_at_a_plain_sentence_end_without_look_ahead() -> None:
    s = SentenceSplitter()
    assert s.push("Sure, I can") == []
    assert s.push(" book that.") == ["Sure, I can book that."]  # the caller is waiting
    assert s.push(" See you") == []
    assert s.push(" then.") == []  # later pieces play behind it: they keep the look-ahead
    assert s.push(" Bye") == ["See you then."]


@pytest.mark.parametrize(
    "text",
    [
        "It is at 10.",  # may be 10.30
        "We are in the U.S.",  # a single letter
        "Ask for Dr.",
        "It opens at 9 a.m.",
        "It costs approx.",
        "Well...",  # an ellipsis goes on
        "Hi.",  # too short to be worth a request of its own
    ],
)
def test_first_piece_waits_where_the_end_is_not_plain(text: str) -> None:
    s = SentenceSplitter()
    assert s.push(text) == []
    assert s.flush() == [text]


def test_vad_segments_speech_with_offsets() -> None:
    vad = VoiceActivity(8000)
    events = vad.feed(bytes(8000))  # 500 ms silence
    events += vad.feed(vowel(800))
    assert vad.speaking and vad.speech_ms >= 700
    events += vad.feed(bytes(16000))  # 1 s silence
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd]
    start, end = events
    assert 480 <= start.at_ms <= 520
    assert 1280 <= end.at_ms <= 1450  # webrtcvad's own hangover adds a little
    assert not vad.speaking


def test_vad_accepts_odd_chunk_sizes_and_rejects_bad_rates() -> None:
    vad = VoiceActivity(16000)
    audio = vowel(500, rate=16000)
    for i in range(0, len(audio), 334):  # not a frame multiple
        vad.feed(audio[i : i + 334])
    assert vad.speaking
    with pytest.raises(ValueError):
        VoiceActivity(22050)


def test_heard_prefix_cuts_at_whole_words() -> None:
    text = "I can book you tomorrow at ten"
    assert heard_prefix(text, 0.5) == "I can book you"
    assert heard_prefix(text, 1.0) == text
    assert heard_prefix(text, 0.0) == ""


def test_playback_estimates_play_position_across_utterances() -> None:
    pb = Playback()
    a, b = Utterance(1, 1, "first sentence here"), Utterance(2, 1, "second sentence here")
    pb.add(a)
    pb.add(b)
    second = AudioChunk(bytes(8000), MULAW_8K)  # 1 s of µ-law
    assert pb.audio(a, AudioChunk(bytes(8000), MULAW_8K), now=0.0)
    mark_a = pb.finish(a)
    assert pb.audio(b, second, now=0.1)  # queued behind a: starts playing at 1.0
    pb.finish(b)
    assert b.play_start == pytest.approx(1.0)
    assert pb.audible(0.5)
    # the echo of a's mark comes late (network): b cannot have started before it
    assert pb.reached(mark_a, 1.2) is a
    assert b.play_start == pytest.approx(1.2)
    pb.pause(1.95)  # the caller starts talking: three quarters of b heard
    assert not pb.audible(1.96)
    assert pb.reached("u2", 1.95) is None  # the clear's echo is not "played"
    # resume sends the last quarter again, with a new mark
    ((utt, rest, mark),) = pb.resume(2.5)
    assert utt is b and mark == "u2.2"
    assert sum(len(c) for c in rest) == 2000
    assert pb.audible(2.6)
    cut = pb.clear(2.6)  # then a real interruption: 0.1 s more was heard
    assert cut == [(b, "second sentence")]
    assert not pb.pending


def test_converter_passthrough_and_resampling() -> None:
    ulaw = pcm16_to_mulaw(vowel(100))
    same = Converter(MULAW_8K, MULAW_8K)
    chunk = AudioChunk(ulaw, MULAW_8K)
    assert same.chunk(chunk) is chunk  # no copy, no CPU
    up = Converter(MULAW_8K, CANONICAL)
    out = up.chunk(chunk)
    # QQ emits on every chunk: no 100 ms hold-back before the first output
    assert out.format == CANONICAL and out.duration_ms >= 90


def test_resampler_quality_latency_is_what_the_converter_was_chosen_for() -> None:
    """Why QQ: fed 20 ms Twilio frames, HQ releases nothing for the first ~100 ms, which would
    land on every turn's latency; QQ releases audio with every frame."""
    ulaw = pcm16_to_mulaw(vowel(200))
    first_output_ms = {}
    for quality in ("QQ", "HQ"):
        conv = Converter(MULAW_8K, CANONICAL, quality=quality)
        fed = 0
        for i in range(0, len(ulaw), 160):
            fed += 20
            if conv.convert(ulaw[i : i + 160]):
                break
        first_output_ms[quality] = fed
    assert first_output_ms["QQ"] == 20
    assert first_output_ms["HQ"] >= 80
