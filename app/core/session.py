"""One call's conversation logic as a state machine: ``handle(event, now) -> [action]``.

No I/O, no awaits, no clock reads: the runner passes ``now`` (seconds, monotonic) with every
event and asks ``next_deadline()`` when to send a ``Tick``. Everything the agent does — greeting,
turn-taking, streaming the reply sentence by sentence into TTS, barge-in, fillers and fallbacks
when a provider is slow or failing, DTMF, tools, idle and length limits — is decided here, so it
is tested with a fake clock and no sockets.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.core.audio import AudioChunk, to_pcm16
from app.core.events import (
    Action,
    CallerAudio,
    CallStarted,
    CancelLlm,
    CancelSpeech,
    Clear,
    DtmfDigit,
    Emit,
    EndCall,
    Event,
    LlmDone,
    LlmFailed,
    LlmText,
    LlmTool,
    MarkReached,
    PlayAudio,
    PlayMark,
    RemoteHangup,
    RunTool,
    Shutdown,
    Speak,
    StartLlm,
    SttUpdate,
    Tick,
    TtsAudio,
    TtsDone,
    TtsFailed,
)
from app.core.playback import Playback, Utterance
from app.core.providers import (
    CallInfo,
    LlmRequest,
    Message,
    SpeechStarted,
    SttFailure,
    ToolCall,
    ToolResult,
    Transcript,
    UtteranceEnd,
)
from app.core.records import CallEnded, CallEvent, TranscriptLine, TurnMetrics, Usage
from app.core.script import TERMINAL_TOOLS, AgentScript, build_request
from app.core.text import SentenceSplitter
from app.core.vad import SpeechEnd, SpeechStart, VoiceActivity


class Session:
    def __init__(
        self,
        call: CallInfo,
        script: AgentScript,
        model_end_of_turn: bool = False,
        history: Sequence[Message] = (),
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

        self._started_at: float | None = None
        self._playback = Playback()
        self._next_utt = 0
        self._turn = 0  # agent turns; 0 is the greeting
        self._metrics: dict[int, TurnMetrics] = {}

        # caller side
        self._vad: VoiceActivity | None = None
        self._pending_user: list[str] = []
        self._restored: str | None = None  # user text taken back from a resumed turn
        self._run = 0  # VAD speech runs so far
        self._consumed_run = -1  # a run already part of a committed turn
        self._speech_end_at: float | None = None
        self._stt_final_at: float | None = None
        self._endpoint_at: float | None = None
        self._dtmf: list[str] = []
        self._dtmf_at: float | None = None

        # agent side
        self._llm_turn: int | None = None
        self._llm_text: list[str] = []  # the reply so far (what the model wrote)
        self._llm_tools: list[ToolCall] = []
        self._spoke_in_turn = False
        self._splitter = SentenceSplitter()
        self._played: dict[int, list[str]] = {}  # per turn, model text the caller fully heard
        self._filler_at: float | None = None
        self._giveup_at: float | None = None
        self._ending: str | None = None  # reason, once the goodbye is under way
        self._end_at: float | None = None  # hard stop if the goodbye's mark never comes back

        self._resume_at: float | None = None  # a paused agent carries on at this time
        self._agent_text = ""  # what the agent was saying when it was paused
        self._barge_transcripts: list[str] = []
        self._idle_at: float | None = None
        self._idle_prompted = False
        self._max_at: float | None = None

    # ------------------------------------------------------------------ public

    def handle(self, event: Event, now: float) -> list[Action]:
        if self.ended:
            return []
        out: list[Action] = []
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
                    self._on_llm_done(now, out)
            case LlmFailed(turn, reason):
                if turn == self._llm_turn:
                    self._on_llm_failed(reason, now, out)
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

    def next_deadline(self) -> float | None:
        times = [
            t
            for t in (
                self._resume_at,
                self._endpoint_at,
                self._dtmf_at,
                self._filler_at,
                self._giveup_at,
                self._idle_at,
                self._max_at,
                self._end_at,
            )
            if t is not None
        ]
        return min(times) if times else None

    @property
    def agent_active(self) -> bool:
        return self._llm_turn is not None or self._playback.pending

    # ------------------------------------------------------------------ start / end

    def _on_start(self, now: float, out: list[Action]) -> None:
        if self._started_at is not None:
            return
        self._started_at = now
        self._max_at = now + self.script.max_call_s
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
        self._endpoint_at = self._dtmf_at = self._idle_at = self._max_at = None
        self._speak(self.script.goodbye, self._turn, out, cached=True)
        # Never hang on a goodbye whose mark is lost: end after its length plus a margin.
        self._end_at = now + self.script.goodbye_grace_s

    def _maybe_end(self, now: float, out: list[Action]) -> None:
        if self._ending is not None and not self._playback.pending and self._llm_turn is None:
            self._finish(self._ending, now, out, hang_up=True)

    def _finish(self, reason: str, now: float, out: list[Action], hang_up: bool) -> None:
        self._cancel_llm(out)
        out.append(CancelSpeech())
        if hang_up:
            out.append(EndCall(reason))
        out.append(Emit(CallEnded(reason, now)))
        self.ended = True
        self.end_reason = reason

    # ------------------------------------------------------------------ caller audio

    def _on_audio(self, chunk: AudioChunk, now: float, out: list[Action]) -> None:
        rate = chunk.format.sample_rate
        if self._vad is None or self._vad.sample_rate != rate:
            self._vad = VoiceActivity(rate)
        vad = self._vad
        for ev in vad.feed(to_pcm16(chunk.data, chunk.format.encoding)):
            at = now - (vad.position_ms - ev.at_ms) / 1000.0
            if isinstance(ev, SpeechStart):
                self._run += 1
                self._idle_at = None
                self._endpoint_at = None  # they are still talking: keep the turn open
                self._resume_at = None
            elif isinstance(ev, SpeechEnd):
                self._speech_end_at = at
                if self._playback.paused:
                    # Short speech over agent speech: wait briefly for its words, then go on.
                    self._resume_at = now + self.policy.barge_in_resume_wait_ms / 1000.0
                self._arm_idle(now)
        if not vad.speaking or vad.speech_ms < self.policy.barge_in_min_speech_ms:
            return
        if self._run == self._consumed_run:
            return  # the tail of speech that is already in a committed turn
        if self._playback.paused:
            if self.policy.is_interruption(vad.speech_ms, self._barge_words(), self._agent_text):
                self._interrupt(now, out, barge_in=True)
        else:
            self._caller_took_floor(now, out)

    def _caller_took_floor(self, now: float, out: list[Action]) -> None:
        """The caller is talking. If the agent is talking, pause it at once (the decision
        whether this is a real interruption follows); if it is still thinking about a turn
        nobody heard yet, the caller had not finished: take the turn back, wait for the rest."""
        if self._ending is not None or not self.agent_active:
            return
        if self._playback.audible(now):
            self._pause(now, out)
        elif self._turn > 0 and not self._played.get(self._turn):
            self._resume_caller_turn(now, out)

    def _pause(self, now: float, out: list[Action]) -> None:
        self._agent_text = self._playback.playing_text()
        self._barge_transcripts = []
        self._playback.pause(now)
        self._resume_at = None
        out.append(Clear())
        out.append(Emit(CallEvent("barge_in_pause", now, {"turn": self._turn})))

    def _barge_words(self) -> str | None:
        return " ".join(self._barge_transcripts) or None

    def _resume(self, now: float, out: list[Action]) -> None:
        """It was a backchannel, a cough or our own echo: carry on where we stopped."""
        self._resume_at = None
        for _, chunks, mark in self._playback.resume(now):
            out.extend(PlayAudio(c) for c in chunks)
            if mark is not None:
                out.append(PlayMark(mark))
        out.append(Emit(CallEvent("barge_in_resumed", now, {"turn": self._turn})))

    def _resume_caller_turn(self, now: float, out: list[Action]) -> None:
        self._cancel_llm(out)
        out.append(CancelSpeech())
        self._playback.clear(now)  # nothing of it was sent yet
        self._metrics.pop(self._turn, None)
        if self.history and self.history[-1].role == "assistant":
            self.history.pop()
        if self.history and self.history[-1].role == "user":
            restored = self.history.pop().content
            self._pending_user.insert(0, restored)
            self._restored = restored
        self._filler_at = self._giveup_at = None
        out.append(Emit(CallEvent("turn_resumed", now, {"turn": self._turn})))

    def _interrupt(self, now: float, out: list[Action], barge_in: bool) -> None:
        if not self._playback.paused:
            out.append(Clear())
        self._resume_at = None
        out.append(CancelSpeech())
        self._cancel_llm(out)
        heard_by_turn: dict[int, list[str]] = {}
        for utt, heard in self._playback.clear(now):
            if not utt.cached:  # fixed phrases are not part of the model's history
                heard_by_turn.setdefault(utt.turn, []).append(heard)
            if heard:
                line = TranscriptLine("agent", heard, now, interrupted=True, turn=utt.turn)
                out.append(Emit(line))
        self._trim_history(heard_by_turn)
        self._filler_at = self._giveup_at = None
        if barge_in:
            out.append(Emit(CallEvent("barge_in", now, {"turn": self._turn})))

    def _trim_history(self, heard_by_turn: dict[int, list[str]]) -> None:
        """Keep in the history only what the caller heard of the interrupted reply."""
        if self._turn not in heard_by_turn or self._turn == 0:
            return
        played = self._played.get(self._turn, [])
        heard = " ".join(p for p in played + heard_by_turn[self._turn] if p).strip()
        if self.history and self.history[-1].role == "assistant":
            self.history.pop()
        if heard:
            self.history.append(Message("assistant", heard, interrupted=True))

    # ------------------------------------------------------------------ speech to text

    def _on_stt(self, stt: object, now: float, out: list[Action]) -> None:
        match stt:
            case Transcript(text=text, is_final=True, speech_final=speech_final):
                text = text.strip()
                if text and self._over_agent(now) and self._ignorable(text):
                    out.append(Emit(CallEvent("backchannel", now)))
                    if self._playback.paused:
                        self._resume(now, out)
                    return
                if text:
                    if self._playback.paused:
                        self._interrupt(now, out, barge_in=True)
                    self._pending_user.append(text)
                    self._stt_final_at = now
                if speech_final and self._pending_user:
                    self._arm_endpoint(now)
            case Transcript(text=text):  # interim
                if self._playback.paused and text.strip():
                    self._barge_transcripts = [text.strip()]
                    speech_ms = self._vad.speech_ms if self._vad is not None else 0.0
                    if self.policy.is_interruption(speech_ms, text, self._agent_text):
                        self._interrupt(now, out, barge_in=True)
            case UtteranceEnd():
                if self._pending_user and self._endpoint_at is None:
                    self._arm_endpoint(now)
            case SpeechStarted():
                self._idle_at = None
            case SttFailure(reason=reason, fatal=fatal):
                out.append(_provider_error("stt", reason, now))
                if fatal:
                    self._say_goodbye("speech recognition failed", now, out, interrupt=True)

    def _over_agent(self, now: float) -> bool:
        return self._playback.paused or self._playback.audible(now)

    def _ignorable(self, text: str) -> bool:
        agent = self._agent_text if self._playback.paused else self._playback.playing_text()
        return self.policy.is_backchannel(text) or self.policy.is_echo(text, agent)

    def _arm_endpoint(self, now: float) -> None:
        if self.model_end_of_turn:
            self._endpoint_at = now
            return
        text = " ".join(self._pending_user)
        self._endpoint_at = now + self.policy.endpoint_delay_ms(text) / 1000.0

    def _commit_user_turn(self, now: float, out: list[Action], text: str | None = None) -> None:
        self._endpoint_at = None
        if text is None:
            text = " ".join(self._pending_user).strip()
            self._pending_user.clear()
        if not text or self._ending is not None:
            return
        if self.agent_active:
            if self._playback.audible(now):
                self._interrupt(now, out, barge_in=True)
            else:  # nothing of it was sent yet: drop it quietly
                self._cancel_llm(out)
                out.append(CancelSpeech())
                self._playback.clear(now)
        self._idle_at = None
        self._idle_prompted = False
        if self._vad is not None and self._vad.speaking:
            self._consumed_run = self._run
        self._turn += 1
        turn = self._turn
        results: tuple[ToolResult, ...] = ()
        if self.history and self.history[-1].role == "assistant" and self.history[-1].tool_calls:
            results = tuple(ToolResult(c.id, "done") for c in self.history[-1].tool_calls)
        self.history.append(Message("user", text, tool_results=results))
        said = text
        if self._restored and said.startswith(self._restored):  # that part is already recorded
            said = said[len(self._restored) :].strip()
        self._restored = None
        if said:
            out.append(Emit(TranscriptLine("caller", said, now, turn=turn)))
        self._metrics[turn] = TurnMetrics(
            turn,
            speech_end=self._speech_end_at,
            stt_final=self._stt_final_at,
            turn_committed=now,
        )
        self._speech_end_at = self._stt_final_at = None
        self._start_llm(turn, now, out)

    # ------------------------------------------------------------------ language model

    def _start_llm(self, turn: int, now: float, out: list[Action]) -> None:
        self._llm_turn = turn
        self._llm_text = []
        self._llm_tools = []
        self._spoke_in_turn = False
        self._splitter = SentenceSplitter()
        self._filler_at = now + self.script.llm_filler_after_s
        self._giveup_at = now + self.script.llm_giveup_after_s
        out.append(StartLlm(turn, self._request()))

    def _request(self) -> LlmRequest:
        return build_request(self.script, self.call, self.history)

    def _cancel_llm(self, out: list[Action]) -> None:
        if self._llm_turn is not None:
            out.append(CancelLlm(self._llm_turn))
            self._llm_turn = None

    def _on_llm_text(self, text: str, now: float, out: list[Action]) -> None:
        metrics = self._metrics.get(self._turn)
        if metrics is not None and metrics.llm_first_token is None:
            metrics.llm_first_token = now
        self._filler_at = self._giveup_at = None
        self._llm_text.append(text)
        for sentence in self._splitter.push(text):
            self._speak(sentence, self._turn, out)

    def _on_tool(self, call: ToolCall, now: float, out: list[Action]) -> None:
        self._llm_tools.append(call)
        out.append(Emit(CallEvent("tool", now, {"name": call.name})))
        if call.name != "end_call":
            out.append(RunTool(call))

    def _on_llm_done(self, now: float, out: list[Action]) -> None:
        for sentence in self._splitter.flush():
            self._speak(sentence, self._turn, out)
        reply = "".join(self._llm_text).strip()
        self._llm_turn = None
        self._filler_at = self._giveup_at = None
        if reply or self._llm_tools:
            self.history.append(Message("assistant", reply, tool_calls=tuple(self._llm_tools)))
        terminal = [c for c in self._llm_tools if c.name in TERMINAL_TOOLS]
        if terminal:
            reason = terminal[0].name
            self._ending = reason
            self._end_at = now + self.script.ending_reply_grace_s
            if not reply:
                self._speak(self.script.goodbye, self._turn, out, cached=True)
            self._maybe_end(now, out)
        else:
            self._arm_idle(now)

    def _on_llm_failed(self, reason: str, now: float, out: list[Action]) -> None:
        self._llm_turn = None
        out.append(_provider_error("llm", reason, now))
        self._fallback(now, out)

    def _fallback(self, now: float, out: list[Action]) -> None:
        """A provider failed this turn: say the cached fallback (unless something of the reply
        was already said) and carry on listening."""
        self._filler_at = self._giveup_at = None
        metrics = self._metrics.get(self._turn)
        if metrics is not None:
            metrics.fallback = True
        if not self._spoke_in_turn or not self._playback.turn_pending(self._turn):
            self._speak(self.script.fallback, self._turn, out, cached=True)
        self._arm_idle(now)

    # ------------------------------------------------------------------ speech out

    def _speak(self, text: str, turn: int, out: list[Action], cached: bool = False) -> None:
        self._next_utt += 1
        utt = Utterance(self._next_utt, turn, text, cached=cached)
        self._playback.add(utt)
        if turn == self._turn and turn > 0 and not cached:
            self._spoke_in_turn = True
        out.append(Speak(utt.id, text, cached=cached))

    def _on_tts_audio(self, utt_id: int, chunk: AudioChunk, now: float, out: list[Action]) -> None:
        utt = self._playback.get(utt_id)
        if utt is None or not chunk.data:
            return  # cancelled by a barge-in: drop
        first = utt.first_sent_at is None
        if not self._playback.audio(utt, chunk, now):
            return  # paused by the caller: held until we resume or drop it
        out.append(PlayAudio(chunk))
        if not first:
            return
        if utt.turn == 0 and utt.id == 1 and self._started_at is not None:
            ms = round((now - self._started_at) * 1000.0, 1)
            out.append(Emit(CallEvent("greeting_first_audio", now, {"ms": ms})))
        metrics = self._metrics.get(utt.turn)
        # The turn's latency is to its first real answer: a filler only covers the wait.
        if metrics is not None and metrics.first_audio_sent is None:
            if utt.cached and utt.text == self.script.filler:
                return
            metrics.tts_first_audio = now  # TTS audio goes out the moment it arrives
            metrics.first_audio_sent = now
            out.append(Emit(metrics))

    def _on_tts_done(self, utt_id: int, now: float, out: list[Action]) -> None:
        utt = self._playback.get(utt_id)
        if utt is None:
            return
        if utt.audio_ms == 0:
            self._playback.drop(utt)
            self._maybe_end(now, out)
            return
        self._mark(utt, out)

    def _on_tts_failed(self, utt_id: int, reason: str, now: float, out: list[Action]) -> None:
        utt = self._playback.get(utt_id)
        out.append(_provider_error("tts", reason, now))
        if utt is None:
            return
        if utt.audio_ms > 0:  # part of it arrived: let playback account for it
            self._mark(utt, out)
        else:
            self._playback.drop(utt)
        if utt.cached:
            self._maybe_end(now, out)
            return
        # The rest of this reply would have the same fate: stop it, say the fallback.
        if utt.turn == self._turn:
            self._cancel_llm(out)
            out.append(CancelSpeech())
            for partial in self._playback.cancel_unsent():
                self._mark(partial, out)
            self._speak(self.script.fallback, self._turn, out, cached=True)
            metrics = self._metrics.get(self._turn)
            if metrics is not None:
                metrics.fallback = True

    def _mark(self, utt: Utterance, out: list[Action]) -> None:
        mark = self._playback.finish(utt)
        if mark is not None:  # while paused, ``resume`` sends it
            out.append(PlayMark(mark))

    def _on_mark(self, name: str, now: float, out: list[Action]) -> None:
        utt = self._playback.reached(name, now)
        if utt is None:
            return
        if not utt.cached:
            self._played.setdefault(utt.turn, []).append(utt.text)
        out.append(Emit(TranscriptLine("agent", utt.text, now, turn=utt.turn)))
        if not self._playback.pending:
            self._arm_idle(now)
        self._maybe_end(now, out)

    # ------------------------------------------------------------------ keypad

    def _on_dtmf(self, digit: str, now: float, out: list[Action]) -> None:
        out.append(Emit(CallEvent("dtmf", now)))
        if self._ending is not None:
            return
        if self._playback.audible(now):
            self._interrupt(now, out, barge_in=True)
        self._idle_at = None
        self._dtmf.append(digit)
        if digit == "#" or len(self._dtmf) >= self.script.keypad_max_digits:
            self._flush_dtmf(now, out)
        else:
            self._dtmf_at = now + self.script.dtmf_timeout_s

    def _flush_dtmf(self, now: float, out: list[Action]) -> None:
        digits, self._dtmf, self._dtmf_at = self._dtmf, [], None
        if digits:
            self._commit_user_turn(now, out, text="[keypad: " + " ".join(digits) + "]")

    # ------------------------------------------------------------------ timers

    def _arm_idle(self, now: float) -> None:
        if self._ending is None and not self.agent_active and not self._pending_user:
            self._idle_at = now + self.script.idle_timeout_s

    def _on_tick(self, now: float, out: list[Action]) -> None:
        if self._end_at is not None and now >= self._end_at:
            self._finish(self._ending or "ended", now, out, hang_up=True)
            return
        if self._max_at is not None and now >= self._max_at:
            self._max_at = None
            self._say_goodbye("max call length", now, out, interrupt=True)
            return
        if self._resume_at is not None and now >= self._resume_at:
            if self._playback.paused:
                self._resume(now, out)
            self._resume_at = None
        if self._endpoint_at is not None and now >= self._endpoint_at:
            self._commit_user_turn(now, out)
        if self._dtmf_at is not None and now >= self._dtmf_at:
            self._flush_dtmf(now, out)
        if self._giveup_at is not None and now >= self._giveup_at:
            self._giveup_at = None
            self._cancel_llm(out)
            out.append(_provider_error("llm", "timeout", now))
            self._fallback(now, out)
        if self._filler_at is not None and now >= self._filler_at:
            self._filler_at = None
            metrics = self._metrics.get(self._turn)
            if metrics is not None:
                metrics.filler = True
            self._speak(self.script.filler, self._turn, out, cached=True)
        if self._idle_at is not None and now >= self._idle_at:
            self._idle_at = None
            if self.agent_active or self._pending_user:
                return
            if self._idle_prompted:
                self._say_goodbye("idle", now, out, interrupt=False)
            else:
                self._idle_prompted = True
                out.append(Emit(CallEvent("idle_prompt", now)))
                self._speak(self.script.idle_prompt, self._turn, out, cached=True)


def _provider_error(provider: str, reason: str, now: float) -> Emit:
    # ``reason`` is an error class or short code, never a transcript
    return Emit(CallEvent("provider_error", now, {"provider": provider, "type": reason[:80]}))
