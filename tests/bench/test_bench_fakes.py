"""The benchmark's fake recogniser on a line cut by a short pause: the service's early end
splits it into two finals, and the words still come back whole, in order, once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "scripts")]

from bench_fakes import FRAME_BYTES, MULAW_SILENCE, ClipRecogniser, ExactEndpointEngine, Script  # noqa: E402

from tests.fakes.deepgram_server import Context, ListenOptions, Segment  # noqa: E402


def finals(*clips: bytes, endpointing_ms: int = 300, gap_ms: int = 800) -> list[Segment]:
    """The final results for ``clips`` said one after another on one connection."""
    query = {"endpointing": [str(endpointing_ms)], "encoding": ["mulaw"], "sample_rate": ["8000"]}
    engine = ExactEndpointEngine(ListenOptions.from_query(query), interim_every_ms=None)
    out = []
    silence = MULAW_SILENCE * 8 * gap_ms
    for chunk in (silence, *(x for clip in clips for x in (clip, silence))):
        for i in range(0, len(chunk), FRAME_BYTES):
            frame = chunk[i : i + FRAME_BYTES]
            frame += MULAW_SILENCE * (FRAME_BYTES - len(frame))
            out += [x for x in engine.feed(frame) if isinstance(x, Segment) and x.is_final]
    return out


@pytest.fixture(scope="module")
def script() -> Script:
    return Script.render(4)


def test_a_line_split_at_a_short_pause_is_recognised_whole_across_its_finals(script) -> None:
    text, clip, _, _ = script.lines[3]  # "No that is everything thank you": pauses after "No"
    recogniser = ClipRecogniser({t: c for t, c, _, _ in script.lines})
    segments = [s for s in finals(clip, endpointing_ms=50) if s.speech_final]
    assert len(segments) >= 2  # the early end cut it
    context = Context()
    heard = [context.after(s, recogniser(context.before(s.audio))) for s in segments]
    assert " ".join(h for h in heard if h) == text
    assert recogniser.misses == 0
    # Without the context the second part is no line's start: nothing recognised.
    plain = ClipRecogniser({t: c for t, c, _, _ in script.lines})
    assert plain(segments[-1].audio) == "" and plain.misses == 1


@pytest.mark.parametrize("gap_ms", [1000, 2200, 4000])
def test_a_new_line_after_a_long_silence_starts_a_new_context(script, gap_ms) -> None:
    # Over 2 s between lines the service also sends a final for the silence; at 2.2 s that
    # final leaves only ~120 ms of silence before the next line in its segment.
    recogniser = ClipRecogniser({t: c for t, c, _, _ in script.lines})
    context = Context()
    clips = [clip for _, clip, _, _ in script.lines[:3]]
    said = [
        context.after(s, recogniser(context.before(s.audio)))
        for s in finals(*clips, endpointing_ms=75, gap_ms=gap_ms)
    ]
    assert [x for x in said if x] == [text for text, _, _, _ in script.lines[:3]]
    assert recogniser.misses == 0
