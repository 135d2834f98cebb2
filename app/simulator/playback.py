"""Twilio's play-out buffer for the agent's voice, as a pure clock-fed state machine.

Agent ``media`` is appended to a buffer that plays in order, in real time. A ``mark`` is
echoed when playback reaches it, at once if nothing is buffered. ``clear`` drops what has not
played yet and echoes every pending mark at once. Every method takes ``now`` (seconds on any
monotonic clock); nothing here reads a clock or sleeps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

SAMPLE_RATE = 8000  # µ-law: one byte per sample


@dataclass(slots=True)
class Segment:
    """Agent audio as it plays: starts at ``start``; cut short if a clear came mid-way."""

    start: float
    audio: bytes
    turn: int
    received: float
    cleared: bool = False  # a clear cut this segment short

    @property
    def end(self) -> float:
        return self.start + len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class Gap:
    """The buffer ran dry between two media messages of the same turn (late audio)."""

    turn: int
    at: float
    ms: float


class PlaybackClock:
    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.gaps: list[Gap] = []
        self.dropped_bytes = 0  # audio received but dropped by clear before it played
        self.interrupted_turns: set[int] = set()  # turns whose reply a clear cut short
        self._play_end = float("-inf")
        self._pending: deque[tuple[str, float]] = deque()

    @property
    def play_end(self) -> float:
        return self._play_end

    def playing(self, now: float) -> bool:
        return self._play_end > now

    def media(self, audio: bytes, now: float, turn: int) -> None:
        last = self.segments[-1] if self.segments else None
        if last is not None and last.turn == turn and now > self._play_end:
            self.gaps.append(Gap(turn, self._play_end, (now - self._play_end) * 1000))
        start = max(now, self._play_end)
        self.segments.append(Segment(start, audio, turn, now))
        self._play_end = start + len(audio) / SAMPLE_RATE

    def mark(self, name: str, now: float) -> list[str]:
        """Queue a mark; returns the marks to echo right now (this one if nothing plays)."""
        if not self._pending and self._play_end <= now:
            return [name]
        self._pending.append((name, self._play_end))
        return []

    def clear(self, now: float) -> list[str]:
        """Drop unplayed audio; returns every pending mark, to echo at once."""
        kept: list[Segment] = []
        for seg in self.segments:
            if seg.start >= now:
                self.dropped_bytes += len(seg.audio)
                self.interrupted_turns.add(seg.turn)
                continue
            if seg.end > now:
                played = int((now - seg.start) * SAMPLE_RATE)
                self.dropped_bytes += len(seg.audio) - played
                seg.audio = seg.audio[:played]
                seg.cleared = True
                self.interrupted_turns.add(seg.turn)
            kept.append(seg)
        self.segments = kept
        self._play_end = min(self._play_end, now)
        names = [name for name, _ in self._pending]
        self._pending.clear()
        return names

    def due(self, now: float) -> list[str]:
        """Marks that playback has reached by ``now``, in order."""
        names: list[str] = []
        while self._pending and self._pending[0][1] <= now:
            names.append(self._pending.popleft()[0])
        return names

    def next_due(self) -> float | None:
        return self._pending[0][1] if self._pending else None
