"""What a simulated call reports, as plain data. Times are seconds since ``start`` was sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

HangupSide = Literal["caller", "agent", "none"]


@dataclass(frozen=True, slots=True)
class Violation:
    at: float | None  # None: before the stream opened (webhook, TwiML, upgrade)
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class MarkEcho:
    name: str
    received: float  # the server sent it
    echoed: float  # we echoed it (played out, or cleared)
    cleared: bool  # echoed because of a clear, not because playback reached it


@dataclass(slots=True)
class Turn:
    """Turn 0 is the greeting (no caller line); turn k answers caller line k."""

    index: int
    caller_text: str | None = None  # the line's text, a WAV file name, or "DTMF 12#"
    dtmf: str = ""
    barge_in: bool = False  # this line was spoken over the agent's previous reply
    speech_onset: float | None = None  # first frame of the line went out
    speech_end: float | None = None  # last frame of the line went out (or digits sent)
    first_audio: float | None = None  # first agent media after speech_end (start, greeting)
    clear_at: float | None = None  # first clear received after speech_onset
    agent_audio: bytes = b""  # µ-law the caller heard, cut at a clear
    agent_text: str | None = None  # agent_audio transcribed, when asked for
    interrupted: bool = False  # a clear cut this turn's reply short
    timed_out: bool = False  # the reply never started within the timeout
    gaps_ms: list[float] = field(default_factory=list)  # playout underruns within the reply

    @property
    def latency_ms(self) -> float | None:
        """Caller speech end (or ``start`` for the greeting) -> first agent audio received."""
        begin = 0.0 if self.index == 0 else self.speech_end
        if begin is None or self.first_audio is None:
            return None
        return (self.first_audio - begin) * 1000

    @property
    def barge_in_ms(self) -> float | None:
        """Caller speech onset -> clear received."""
        if self.speech_onset is None or self.clear_at is None:
            return None
        return (self.clear_at - self.speech_onset) * 1000

    @property
    def agent_audio_ms(self) -> float:
        return len(self.agent_audio) / 8.0


@dataclass(slots=True)
class CallResult:
    call_sid: str
    stream_sid: str
    connected: bool = False  # the media stream opened and ``start`` went out
    error: str | None = None  # why the call could not run or finish
    hangup: HangupSide = "none"
    turns: list[Turn] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    marks: list[MarkEcho] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    duration_s: float = 0.0
    frames_sent: int = 0
    send_lag_max_ms: float = 0.0  # our own pacing: the latest a media frame went out
    dropped_ms: float = 0.0  # agent audio received but dropped by clear
    wav_path: Path | None = None
    # Twilio's <Connect action> requests after each stream ended, and what each answered:
    # "hangup", "stream" (the call went on over a new stream) or an error.
    after_streams: list[str] = field(default_factory=list)
    # For each new stream: ms from the agent's last audio on the old one to its first audio
    # on the new one (the silence the caller heard across the move).
    resume_gaps_ms: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.connected and self.error is None and not self.violations

    @property
    def greeting_latency_ms(self) -> float | None:
        return self.turns[0].latency_ms if self.turns else None
