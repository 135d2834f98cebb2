"""A harness that drives a Session with a fake clock: events in, actions out, no sockets.

Caller "speech" is a synthetic vowel (harmonics of 140 Hz, amplitude-modulated) that webrtcvad
classifies as voiced, so the session's real VAD runs on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from app.core.audio import MULAW_8K, AudioChunk, pcm16_to_mulaw
from app.core.events import (
    Action,
    CallerAudio,
    CallStarted,
    Event,
    MarkReached,
    PlayAudio,
    PlayMark,
    Speak,
    Tick,
    TtsAudio,
    TtsDone,
)
from app.core.providers import CallInfo
from app.core.script import AgentScript
from app.core.session import Session
from app.core.turns import TurnPolicy

FRAME_MS = 20


def vowel(ms: int, rate: int = 8000) -> bytes:
    t = np.arange(int(rate * ms / 1000)) / rate
    sig = sum((1 / k) * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 25))
    sig = sig * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    return (sig / np.abs(sig).max() * 12000).astype(np.int16).tobytes()


def script(**overrides: object) -> AgentScript:
    base: dict[str, object] = dict(
        system_prompt="You are {agent_name}.",
        greeting="Hello, how can I help?",
        goodbye="Goodbye!",
        filler="One moment.",
        fallback="Sorry, could you say that again?",
        idle_prompt="Are you still there?",
        idle_timeout_s=10.0,
        max_call_s=600.0,
        llm_filler_after_s=1.2,
        llm_giveup_after_s=6.0,
        policy=TurnPolicy(endpointing_ms=0, barge_in_min_speech_ms=200),
    )
    base.update(overrides)
    return AgentScript(**base)  # type: ignore[arg-type]


@dataclass
class Harness:
    session: Session
    now: float = 100.0
    actions: list[Action] = field(default_factory=list)

    @classmethod
    def create(cls, **overrides: object) -> Harness:
        call = CallInfo("CAtest", "twilio", variables={"agent_name": "Ava"})
        return cls(Session(call, script(**overrides)))

    def send(self, event: Event) -> list[Action]:
        out = self.session.handle(event, self.now)
        self.actions.extend(out)
        return out

    def advance(self, ms: float) -> list[Action]:
        """Move the clock, firing timers the session asked for on the way."""
        out: list[Action] = []
        end = self.now + ms / 1000.0
        while True:
            deadline = self.session.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            out += self.send(Tick())
        self.now = end
        return out

    def caller(self, ms: int, voiced: bool = True) -> list[Action]:
        """Caller audio in 20 ms Twilio frames, in real time on the fake clock."""
        pcm = vowel(ms) if voiced else bytes(int(8000 * ms / 1000) * 2)
        ulaw = pcm16_to_mulaw(pcm)
        out: list[Action] = []
        for i in range(0, len(ulaw), 160):
            out += self.advance(FRAME_MS)
            out += self.send(CallerAudio(AudioChunk(ulaw[i : i + 160], MULAW_8K)))
        return out

    def synthesize(self, speak: Speak, ms: int) -> list[Action]:
        """Play the TTS side for one Speak: ``ms`` of audio, then done."""
        audio = AudioChunk(bytes(int(8 * ms)), MULAW_8K)
        out = self.send(TtsAudio(speak.utterance, audio))
        out += self.send(TtsDone(speak.utterance))
        return out

    def play_out(self, actions: list[Action], ms_each: int = 1000) -> list[Action]:
        """Synthesize every Speak in ``actions`` and echo the marks as playback reaches them."""
        out: list[Action] = []
        for speak in [a for a in actions if isinstance(a, Speak)]:
            produced = self.synthesize(speak, ms_each)
            out += produced
            for mark in [a for a in produced if isinstance(a, PlayMark)]:
                out += self.advance(ms_each)
                out += self.send(MarkReached(mark.name))
        return out

    def start(self) -> list[Action]:
        out = self.send(CallStarted())
        return out + self.play_out(out)


def of(kind: type, actions: list[Action]) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


def audio_ms(actions: list[Action]) -> float:
    return sum(a.chunk.duration_ms for a in actions if isinstance(a, PlayAudio))
