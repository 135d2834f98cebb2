"""The caller's side of a call session: their audio and words, when their turn is finished,
speech over the agent (pause, resume or yield) and the keypad."""

from __future__ import annotations

from app.core.audio import AudioChunk, to_pcm16
from app.core.events import (
    Action,
    CancelSpeech,
    Clear,
    Emit,
    PlayAudio,
    PlayMark,
)
from app.core.providers import (
    Message,
    SpeechStarted,
    SttFailure,
    ToolResult,
    Transcript,
    UtteranceEnd,
)
from app.core.records import CallEvent, TranscriptLine, TurnMetrics
from app.core.session_state import SessionState, provider_error
from app.core.vad import SpeechEnd, SpeechStart, VoiceActivity


class CallerTurn(SessionState):
    def _on_audio(self, chunk: AudioChunk, now: float, out: list[Action]) -> None:
        rate = chunk.format.sample_rate
        if self._vad is None or self._vad.sample_rate != rate:
            self._vad = VoiceActivity(rate)
        vad = self._vad
        for ev in vad.feed(to_pcm16(chunk.data, chunk.format.encoding)):
            at = now - (vad.position_ms - ev.at_ms) / 1000.0
            if isinstance(ev, SpeechStart):
                self._run += 1
                self.timers.idle = None
                self.timers.endpoint = None  # they are still talking: keep the turn open
                self.timers.resume = None
            elif isinstance(ev, SpeechEnd):
                self._speech_end_at = at
                if self._playback.paused:
                    # Short speech over agent speech: wait briefly for its words, then go on.
                    self.timers.resume = now + self.policy.barge_in_resume_wait_ms / 1000.0
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
        self.timers.resume = None
        out.append(Clear())
        out.append(Emit(CallEvent("barge_in_pause", now, {"turn": self._turn})))

    def _barge_words(self) -> str | None:
        return " ".join(self._barge_transcripts) or None

    def _resume(self, now: float, out: list[Action]) -> None:
        """It was a backchannel, a cough or our own echo: carry on where we stopped."""
        self.timers.resume = None
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
        self.timers.filler = self.timers.giveup = None
        out.append(Emit(CallEvent("turn_resumed", now, {"turn": self._turn})))

    def _interrupt(self, now: float, out: list[Action], barge_in: bool) -> None:
        if not self._playback.paused:
            out.append(Clear())
        self.timers.resume = None
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
        self.timers.filler = self.timers.giveup = None
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
                if self._pending_user and self.timers.endpoint is None:
                    self._arm_endpoint(now)
            case SpeechStarted():
                self.timers.idle = None
            case SttFailure(reason=reason, fatal=fatal):
                out.append(provider_error("stt", reason, now))
                if fatal:
                    self._say_goodbye("speech recognition failed", now, out, interrupt=True)

    def _over_agent(self, now: float) -> bool:
        return self._playback.paused or self._playback.audible(now)

    def _ignorable(self, text: str) -> bool:
        agent = self._agent_text if self._playback.paused else self._playback.playing_text()
        return self.policy.is_backchannel(text) or self.policy.is_echo(text, agent)

    def _arm_endpoint(self, now: float) -> None:
        if self.model_end_of_turn:
            self.timers.endpoint = now
            return
        text = " ".join(self._pending_user)
        self.timers.endpoint = now + self.policy.endpoint_delay_ms(text) / 1000.0

    def _commit_user_turn(self, now: float, out: list[Action], text: str | None = None) -> None:
        self.timers.endpoint = None
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
        self.timers.idle = None
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

    def _on_dtmf(self, digit: str, now: float, out: list[Action]) -> None:
        out.append(Emit(CallEvent("dtmf", now)))
        if self._ending is not None:
            return
        if self._playback.audible(now):
            self._interrupt(now, out, barge_in=True)
        self.timers.idle = None
        self._dtmf.append(digit)
        if digit == "#" or len(self._dtmf) >= self.script.keypad_max_digits:
            self._flush_dtmf(now, out)
        else:
            self.timers.dtmf = now + self.script.dtmf_timeout_s

    def _flush_dtmf(self, now: float, out: list[Action]) -> None:
        digits, self._dtmf, self.timers.dtmf = self._dtmf, [], None
        if digits:
            self._commit_user_turn(now, out, text="[keypad: " + " ".join(digits) + "]")
