"""What a call session holds, declared once for the two halves of its logic: the caller's
turn (``app.core.caller_turn``) and the agent's speech (``app.core.agent_speech``). The values
are set by ``Session.__init__``; the phase is derived from them, never stored."""

from __future__ import annotations

import enum

from app.core.events import Action, Emit
from app.core.playback import Playback, Utterance
from app.core.providers import CallInfo, Message, ToolCall
from app.core.records import CallEvent, TurnMetrics
from app.core.script import AgentScript
from app.core.speculation import Speculation
from app.core.text import SentenceSplitter
from app.core.timers import Deadlines
from app.core.turns import TurnPolicy
from app.core.vad import Quiet, VoiceActivity


class Phase(enum.Enum):
    LISTENING = "listening"  # nobody speaks; waiting for the caller
    CALLER_TURN = "caller_turn"  # the caller spoke; their turn is not yet taken as finished
    THINKING = "thinking"  # the model is writing the reply; nothing of it plays yet
    SPEAKING = "speaking"  # the agent's audio is playing
    PAUSED = "paused"  # the caller spoke over the agent; it waits to resume or yield
    ENDING = "ending"  # the goodbye is under way
    ENDED = "ended"


class SessionState:
    call: CallInfo
    script: AgentScript
    policy: TurnPolicy
    model_end_of_turn: bool
    history: list[Message]
    ended: bool
    end_reason: str | None
    timers: Deadlines
    _started_at: float | None
    _playback: Playback
    _next_utt: int
    _turn: int  # agent turns; 0 is the greeting
    _metrics: dict[int, TurnMetrics]
    # caller side
    _vad: VoiceActivity | None
    _quiet: Quiet | None  # the caller's loudness while the agent is paused
    _pending_user: list[str]
    _restored: str | None
    _run: int
    _consumed_run: int
    _backchannel_run: int
    _speech_end_at: float | None
    _stt_final_at: float | None
    _dtmf: list[str]
    _vad_end_at: float | None  # when our VAD last closed a run of speech
    _confirm_ms: int  # silence the recogniser leaves to us to confirm its early end
    _confirm_pending: bool  # the endpoint timer includes that confirmation
    _confirm_from_ms: float  # our VAD's stream offset when it began (voice after it: go on)
    _filler_spoken: bool  # the filler already covered this caller turn
    # agent side
    _llm_turn: int | None  # the running model request's id (None: none runs)
    _llm_seq: int
    _spec: Speculation | None  # a reply started before the turn was confirmed
    _tools_running: set[str]
    _tool_filler_spoken: bool
    _llm_text: list[str]
    _llm_tools: list[ToolCall]
    _spoke_in_turn: bool
    _splitter: SentenceSplitter
    _played: dict[int, list[str]]
    _ending: str | None
    _agent_text: str
    _barge_transcripts: list[str]
    _idle_prompted: bool

    @property
    def agent_active(self) -> bool:
        return self._llm_turn is not None or self._playback.pending

    @property
    def phase(self) -> Phase:
        """Where the conversation is, derived from the state (nothing to keep in step)."""
        if self.ended:
            return Phase.ENDED
        if self._ending is not None:
            return Phase.ENDING
        if self._playback.paused:
            return Phase.PAUSED
        if self._playback.pending:
            return Phase.SPEAKING
        if self._llm_turn is not None:
            return Phase.THINKING
        if self._pending_user or self.timers.endpoint is not None:
            return Phase.CALLER_TURN
        return Phase.LISTENING

    # Steps one half of the logic asks of the other, or of the session itself.
    def _start_llm(self, turn: int, now: float, out: list[Action]) -> None:
        raise NotImplementedError

    def _cancel_llm(self, out: list[Action]) -> None:
        raise NotImplementedError

    def _arm_idle(self, now: float) -> None:
        raise NotImplementedError

    def _maybe_end(self, now: float, out: list[Action]) -> None:
        raise NotImplementedError

    def _say_goodbye(self, reason: str, now: float, out: list[Action], interrupt: bool) -> None:
        raise NotImplementedError

    def _speculate(self, now: float, out: list[Action], text: str | None = None) -> None:
        raise NotImplementedError

    def _drop_speculation(self, now: float, out: list[Action], reason: str) -> None:
        raise NotImplementedError

    def _adopt(self, spec: Speculation, turn: int, now: float, out: list[Action]) -> None:
        raise NotImplementedError

    def _only_filler(self) -> bool:
        raise NotImplementedError

    def _speak(self, text: str, turn: int, out: list[Action], cached: bool = False) -> None:
        raise NotImplementedError

    def _mark(self, utt: Utterance, out: list[Action]) -> None:
        raise NotImplementedError


def provider_error(provider: str, reason: str, now: float) -> Emit:
    # ``reason`` is an error class or short code, never a transcript
    return Emit(CallEvent("provider_error", now, {"provider": provider, "type": reason[:80]}))
