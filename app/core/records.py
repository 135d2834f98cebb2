"""Records a session emits for observers: transcript lines, per-turn latency, call events.

Observers (structured logs, Prometheus metrics, the call-record store, the simulator's
printout) receive these through ``Emit`` actions. Times are the session clock's seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    role: Literal["caller", "agent"]
    text: str  # personal data: store it, never log it
    at: float
    interrupted: bool = False  # agent only: the caller cut it off; ``text`` is what was heard
    turn: int = 0


@dataclass(slots=True)
class TurnMetrics:
    """Latency of one agent turn. Each stage is stamped with the session clock.

    speech_end: caller stopped speaking (VAD, hangover removed)
    stt_final: the final transcript that closed the turn arrived
    turn_committed: endpointing decided the caller's turn is over (LLM request sent)
    llm_first_token: first text from the language model
    tts_first_audio: first synthesized audio of the reply
    first_audio_sent: that audio went to the transport
    """

    turn: int
    speech_end: float | None = None
    stt_final: float | None = None
    turn_committed: float | None = None
    llm_first_token: float | None = None
    tts_first_audio: float | None = None
    first_audio_sent: float | None = None
    filler: bool = False  # a cached filler phrase covered a slow model
    fallback: bool = False  # a cached fallback phrase replaced a failed provider

    def stages_ms(self) -> dict[str, float | None]:
        def span(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else round((b - a) * 1000.0, 1)

        start = self.speech_end if self.speech_end is not None else self.stt_final
        return {
            "endpoint_to_stt_final": span(self.speech_end, self.stt_final),
            "stt_final_to_commit": span(self.stt_final, self.turn_committed),
            "llm_first_token": span(self.turn_committed, self.llm_first_token),
            "tts_first_audio": span(self.llm_first_token, self.tts_first_audio),
            "first_audio_sent": span(self.tts_first_audio, self.first_audio_sent),
            "total": span(start, self.first_audio_sent),
        }


@dataclass(frozen=True, slots=True)
class CallEvent:
    """Something worth counting: barge_in, dtmf, tool, idle_prompt, provider_error, ...

    ``detail`` must not contain transcripts or phone numbers.
    """

    kind: str
    at: float
    detail: dict[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallEnded:
    reason: str
    at: float
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Provider usage of one call, for pricing. Emitted as it accrues (LLM per turn) or at the
    end (STT audio seconds, TTS characters)."""

    llm_input_tokens: int = 0
    llm_output_tokens: int = 0
    llm_cached_tokens: int = 0
    stt_seconds: float = 0.0
    tts_characters: int = 0
    # Of the model tokens above, those spent on speculative replies that were thrown away
    # (the caller went on speaking, or said something else than the recogniser first thought).
    llm_wasted_input_tokens: int = 0
    llm_wasted_output_tokens: int = 0
