"""One call's conversation logic as a state machine: ``handle(event, now) -> [action]``.

No I/O, no awaits, no clock reads: the runner passes ``now`` (seconds, monotonic) with every
event and asks ``next_deadline()`` when to send a ``Tick``. Everything the agent does — greeting,
turn-taking, streaming the reply sentence by sentence into TTS, barge-in, fillers and fallbacks
when a provider is slow or failing, DTMF, tools, idle and length limits — is decided here, so it
is tested with a fake clock and no sockets.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.core.agent_speech import AgentSpeech
from app.core.caller_turn import CallerTurn
from app.core.events import (
    Action,
    CallerAudio,
    CallStarted,
    CancelLlm,
    CancelSpeech,
    DtmfDigit,
    Emit,
    EndCall,
    Event,
    LlmDone,
    LlmFailed,
    LlmText,
    LlmTool,
    MarkReached,
    RemoteHangup,
    Shutdown,
    Speak,
    StartLlm,
    SttUpdate,
    Tick,
    ToolDone,
    TtsAudio,
    TtsDone,
    TtsFailed,
)
from app.core.playback import Playback, Utterance
from app.core.providers import (
    CallInfo,
    LlmUsage,
    Message,
    ToolCall,
)
from app.core.records import CallEnded, CallEvent, TurnMetrics, Usage
from app.core.script import AgentScript, build_request
from app.core.session_state import Phase, provider_error  # noqa: F401 - Phase: the API
from app.core.speculation import Speculation, request_chars
from app.core.text import SentenceSplitter
from app.core.timers import Deadlines
from app.core.vad import Quiet, VoiceActivity


class Session(CallerTurn, AgentSpeech):
    def __init__(
        self,
        call: CallInfo,
        script: AgentScript,
        model_end_of_turn: bool = False,
        history: Sequence[Message] = (),
        confirm_ms: int = 0,
    ) -> None:
        self.call = call
        self.script = script
        self.policy = script.policy
        # The recogniser's end of utterance comes from an end-of-turn model (Deepgram Flux) that
        # already weighed whether the caller was finished: answer at once, no adaptive wait.
        self.model_end_of_turn = model_end_of_turn
        # A call that continues (its stream reconnected) brings its conversation so far.
        self.history: list[Message] = list(history)
        self.ended = False
        self.end_reason: str | None = None

        self.timers = Deadlines()
        self._started_at: float | None = None
        self._playback = Playback()
        self._next_utt = 0
        self._turn = 0  # agent turns; 0 is the greeting
        self._metrics: dict[int, TurnMetrics] = {}

        # caller side
        self._vad: VoiceActivity | None = None
        self._quiet: Quiet | None = None
        self._pending_user: list[str] = []
        self._restored: str | None = None  # user text taken back from a resumed turn
        self._run = 0  # VAD speech runs so far
        self._consumed_run = -1  # a run already part of a committed turn
        self._backchannel_run = -1  # a run judged a backchannel while it was still going
        self._speech_end_at: float | None = None
        self._stt_final_at: float | None = None
        self._dtmf: list[str] = []
        # A recogniser that ends utterances early (for speculative replies) leaves the rest of
        # the usual silence to us: our VAD's end of speech, or this long after its final.
        self._vad_end_at: float | None = None
        self._confirm_ms = confirm_ms
        self._confirm_pending = False
        self._confirm_from_ms = 0.0  # our VAD's offset when the confirmation began
        self._filler_spoken = False

        # agent side
        self._llm_turn: int | None = None
        self._llm_seq = 0
        self._spec: Speculation | None = None
        self._tools_running: set[str] = set()
        self._tool_filler_spoken = False
        self._llm_text: list[str] = []  # the reply so far (what the model wrote)
        self._llm_tools: list[ToolCall] = []
        self._spoke_in_turn = False
        self._splitter = SentenceSplitter()
        self._played: dict[int, list[str]] = {}  # per turn, model text the caller fully heard
        self._ending: str | None = None  # reason, once the goodbye is under way

        self._agent_text = ""  # what the agent was saying when it was paused
        self._barge_transcripts: list[str] = []
        self._idle_prompted = False

    # ------------------------------------------------------------------ public

    def handle(self, event: Event, now: float) -> list[Action]:
        if self.ended:
            return []
        out: list[Action] = []
        if self._spec is not None and self._spec.owns(event):
            self._hold(event, now, out)
            return out
        match event:
            case CallerAudio(chunk):
                self._on_audio(chunk, now, out)
            case SttUpdate(stt):
                self._on_stt(stt, now, out)
            case LlmText(turn, text):
                if turn == self._llm_turn:
                    self._on_llm_text(text, now, out)
            case LlmTool(turn, call):
                if turn == self._llm_turn:
                    self._on_tool(call, now, out)
            case LlmDone(turn, usage):
                if turn == self._llm_turn:
                    self._llm_usage(usage, out)
                    self._on_llm_done(now, out)
            case LlmFailed(turn, reason):
                if turn == self._llm_turn:
                    self._on_llm_failed(reason, now, out)
            case ToolDone(call_id):
                self._tools_running.discard(call_id)
                if not self._tools_running:
                    self.timers.tool = None
            case TtsAudio(utt_id, chunk):
                self._on_tts_audio(utt_id, chunk, now, out)
            case TtsDone(utt_id):
                self._on_tts_done(utt_id, now, out)
            case TtsFailed(utt_id, reason):
                self._on_tts_failed(utt_id, reason, now, out)
            case MarkReached(name):
                self._on_mark(name, now, out)
            case DtmfDigit(digit):
                self._on_dtmf(digit, now, out)
            case Tick():
                self._on_tick(now, out)
            case CallStarted():
                self._on_start(now, out)
            case RemoteHangup(reason):
                self._finish(reason, now, out, hang_up=False)
            case Shutdown(reason):
                self._say_goodbye(reason, now, out, interrupt=True)
        return out

    def close(self) -> None:
        """The runner stopped before the session ended (an error, a cancellation): nothing more
        is handled."""
        self.ended = True

    def next_deadline(self) -> float | None:
        return self.timers.next()

    # ------------------------------------------------------------------ speculative reply

    def _speculate(self, now: float, out: list[Action], text: str | None = None) -> None:
        """The recogniser thinks the caller has finished: start the reply to ``text`` (the
        pending words by default) unless the turn-taking rules say they have not, the agent is
        busy, or the turn is about to be committed anyway."""
        if not self.script.speculate or self._ending is not None or self._llm_turn is not None:
            return
        if text is None:
            text = " ".join(self._pending_user)
        text = text.strip()
        if not text or self._dtmf or self.policy.unfinished(text):
            return
        if self._playback.pending and not self._only_filler():
            return
        if self.timers.endpoint is not None and self.timers.endpoint <= now:
            return
        if self._spec is not None:
            if self._spec.matches(text):
                return
            self._drop_speculation(now, out, "words changed")
        self._llm_seq += 1
        history = [*self.history, self._user_message(text)]
        request = build_request(self.script, self.call, history)
        vad_at = self._vad.voiced_to_ms if self._vad is not None else 0.0
        self._spec = Speculation(self._llm_seq, text, now, request_chars(request), vad_at)
        out.append(StartLlm(self._llm_seq, request))
        out.append(Emit(CallEvent("speculation_started", now)))

    def _hold(self, event: Event, now: float, out: list[Action]) -> None:
        """An event of the speculative reply: kept; its sentences go to synthesis (held)."""
        spec = self._spec
        assert spec is not None
        for sentence in spec.hold(event, now):
            self._next_utt += 1
            spec.utterances[self._next_utt] = Utterance(self._next_utt, -1, sentence)
            out.append(Speak(self._next_utt, sentence))

    def _drop_speculation(self, now: float, out: list[Action], reason: str) -> None:
        spec, self._spec = self._spec, None
        if spec is None:
            return
        if not spec.done:
            out.append(CancelLlm(spec.id))
        if spec.utterances:
            out.append(CancelSpeech())
            for partial in self._playback.cancel_unsent():  # a filler cut short
                self._mark(partial, out)
        wasted_in, wasted_out = spec.wasted()
        if wasted_in or wasted_out:
            out.append(
                Emit(
                    Usage(
                        llm_input_tokens=wasted_in,
                        llm_output_tokens=wasted_out,
                        llm_wasted_input_tokens=wasted_in,
                        llm_wasted_output_tokens=wasted_out,
                    )
                )
            )
        out.append(Emit(CallEvent("speculation_discarded", now, {"reason": reason})))

    def _adopt(self, spec: Speculation, turn: int, now: float, out: list[Action]) -> None:
        """The turn was confirmed with the words the speculative reply answers: it becomes the
        turn's reply, and what it held is handled now, in the order it arrived."""
        self._llm_turn = spec.id
        self._llm_text, self._llm_tools = list(spec.reply), []
        self._splitter = spec.splitter
        self._spoke_in_turn = False
        self._arm_reply_timers(turn, now)
        out.append(
            Emit(CallEvent("speculation_kept", now, {"ms": round((now - spec.started_at) * 1e3)}))
        )
        if spec.first_token_at is not None:
            self._on_llm_text("", now, out)  # its first token is in: stamp it, stop the timers
        for utt in spec.utterances.values():
            utt.turn = turn
            self._playback.add(utt)
            self._spoke_in_turn = True
        for ev in spec.speech:
            out.extend(self.handle(ev, now))
        for ev in spec.model:
            if isinstance(ev, LlmDone):
                self._llm_usage(ev.usage, out)
                self._on_llm_done(now, out)
            elif isinstance(ev, LlmTool):
                self._on_tool(ev.call, now, out)
            elif isinstance(ev, LlmFailed):
                self._on_llm_failed(ev.reason, now, out)

    def _only_filler(self) -> bool:
        return self._playback.only(self.script.filler)

    @staticmethod
    def _llm_usage(usage: LlmUsage, out: list[Action]) -> None:
        if usage.input_tokens or usage.output_tokens:
            out.append(
                Emit(
                    Usage(
                        llm_input_tokens=usage.input_tokens,
                        llm_output_tokens=usage.output_tokens,
                        llm_cached_tokens=usage.cached_tokens,
                    )
                )
            )

    # ------------------------------------------------------------------ start / end

    def _on_start(self, now: float, out: list[Action]) -> None:
        if self._started_at is not None:
            return
        self._started_at = now
        self.timers.max = now + self.script.max_call_s
        detail: dict[str, str | int | float | bool] = {
            "transport": self.call.transport,
            "direction": self.call.direction,
        }
        out.append(Emit(CallEvent("call_started", now, detail)))
        self._speak(self.script.greeting, 0, out, cached=True)

    def _say_goodbye(self, reason: str, now: float, out: list[Action], interrupt: bool) -> None:
        if self._ending is not None:
            return
        if interrupt and self.agent_active:
            self._interrupt(now, out, barge_in=False)
        self._cancel_llm(out)
        self._ending = reason
        self.timers.endpoint = self.timers.dtmf = self.timers.idle = self.timers.max = None
        self._speak(self.script.goodbye, self._turn, out, cached=True)
        # Never hang on a goodbye whose mark is lost: end after its length plus a margin.
        self.timers.end = now + self.script.goodbye_grace_s

    def _maybe_end(self, now: float, out: list[Action]) -> None:
        if self._ending is not None and not self._playback.pending and self._llm_turn is None:
            self._finish(self._ending, now, out, hang_up=True)

    def _finish(self, reason: str, now: float, out: list[Action], hang_up: bool) -> None:
        self._drop_speculation(now, out, "call ended")
        self._cancel_llm(out)
        out.append(CancelSpeech())
        if hang_up:
            out.append(EndCall(reason))
        out.append(Emit(CallEnded(reason, now)))
        self.ended = True
        self.end_reason = reason

    # ------------------------------------------------------------------ caller audio

    # ------------------------------------------------------------------ speech to text

    # ------------------------------------------------------------------ language model

    # ------------------------------------------------------------------ speech out

    # ------------------------------------------------------------------ keypad

    # ------------------------------------------------------------------ timers

    def _arm_idle(self, now: float) -> None:
        if self._ending is None and not self.agent_active and not self._pending_user:
            self.timers.idle = now + self.script.idle_timeout_s

    def _on_tick(self, now: float, out: list[Action]) -> None:
        if self.timers.end is not None and now >= self.timers.end:
            self._finish(self._ending or "ended", now, out, hang_up=True)
            return
        if self.timers.max is not None and now >= self.timers.max:
            self.timers.max = None
            self._say_goodbye("max call length", now, out, interrupt=True)
            return
        if self.timers.resume is not None and now >= self.timers.resume:
            if self._playback.paused:
                self._resume(now, out)
            self.timers.resume = None
        if self.timers.endpoint is not None and now >= self.timers.endpoint:
            self._commit_user_turn(now, out)
        if self.timers.dtmf is not None and now >= self.timers.dtmf:
            self._flush_dtmf(now, out)
        if self.timers.giveup is not None and now >= self.timers.giveup:
            self.timers.giveup = None
            self._cancel_llm(out)
            out.append(provider_error("llm", "timeout", now))
            self._fallback(now, out)
        if self.timers.filler is not None and now >= self.timers.filler:
            self.timers.filler = None
            self._say_filler(now, out)
        if self.timers.tool is not None and now >= self.timers.tool:
            self.timers.tool = None
            self._say_tool_filler(now, out)
        if self.timers.idle is not None and now >= self.timers.idle:
            self.timers.idle = None
            if self.agent_active or self._pending_user:
                return
            if self._idle_prompted:
                self._say_goodbye("idle", now, out, interrupt=False)
            else:
                self._idle_prompted = True
                out.append(Emit(CallEvent("idle_prompt", now)))
                self._speak(self.script.idle_prompt, self._turn, out, cached=True)
