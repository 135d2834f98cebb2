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
    ProbableEnd,
    SpeechStarted,
    SttFailure,
    ToolResult,
    Transcript,
    UtteranceEnd,
)
from app.core.records import CallEvent, TranscriptLine, TurnMetrics
from app.core.session_state import SessionState, provider_error
from app.core.speculation import Speculation
from app.core.vad import Quiet, SpeechEnd, SpeechStart, VoiceActivity


class CallerTurn(SessionState):
    def _on_audio(self, chunk: AudioChunk, now: float, out: list[Action]) -> None:
        rate = chunk.format.sample_rate
        if self._vad is None or self._vad.sample_rate != rate:
            self._vad = VoiceActivity(rate)
            self._quiet = Quiet(rate)
        vad = self._vad
        pcm = to_pcm16(chunk.data, chunk.format.encoding)
        settled = self._run == self._backchannel_run  # this run was judged a backchannel
        quiet = self._quiet
        track = quiet is not None and (self._playback.paused or settled)
        quiet_ms = quiet.feed(pcm) if track and quiet is not None else 0.0
        for ev in vad.feed(pcm):
            at = now - (vad.position_ms - ev.at_ms) / 1000.0
            if isinstance(ev, SpeechStart):
                self._run += 1
                self._speech_end_at = None  # a new run: the last one's end is not the turn's
                self.timers.idle = None
                self.timers.endpoint = None  # they are still talking: keep the turn open
                self.timers.resume = None
                self._drop_speculation(now, out, "caller went on")
                if self._llm_turn is None:
                    self.timers.filler = None
                    self._filler_spoken = False
            elif isinstance(ev, SpeechEnd):
                self._speech_end_at = at
                self._vad_end_at = now
                self._confirmed(now)
                if self._playback.paused:
                    # Short speech over agent speech: wait briefly for its words, then go on.
                    self.timers.resume = now + self.policy.barge_in_resume_wait_ms / 1000.0
                else:
                    self._arm_filler(at, ev.duration_ms)
                self._arm_idle(now)
        if vad.speaking and vad.silence_ms == 0:  # a voiced frame: did the caller go on?
            spec = self._spec
            if spec is not None and _went_on(vad, spec.vad_at_ms):
                self._drop_speculation(now, out, "caller went on")
            if self._confirm_pending and _went_on(vad, self._confirm_from_ms):
                # The recogniser's early end was a pause inside the turn: the turn stays open
                # (its next final arms the endpoint again).
                self._confirm_pending = False
                self.timers.endpoint = None
        if not vad.speaking or vad.speech_ms < self.policy.barge_in_min_speech_ms:
            return
        if self._run == self._consumed_run:
            return  # the tail of speech that is already in a committed turn
        gap_ms = max(vad.silence_ms, quiet_ms)  # the energy drop shows it before webrtcvad
        if gap_ms > 0:
            # A gap in the caller's speech over a paused agent: short, with no words that
            # count, it was a backchannel ("uh-huh"): carry on now, not after the transcript.
            if (
                self._playback.paused
                and gap_ms >= self.policy.backchannel_gap_ms
                and vad.speech_ms <= self.policy.backchannel_max_ms
                and self._words_ignorable()
            ):
                out.append(Emit(CallEvent("backchannel", now, {"by": "shape"})))
                self._resume(now, out)
            return
        if self._playback.paused:
            if self.policy.is_interruption(vad.speech_ms, self._barge_words(), self._agent_text):
                self._interrupt(now, out, barge_in=True)
        elif settled and vad.speech_ms <= self.policy.backchannel_max_ms:
            return  # the rest of an "uh-huh" already let go: the agent carries on
        else:
            self._caller_took_floor(now, out)

    def _voiced_end(self, now: float) -> float | None:
        """Where the caller's last voiced frame ended while our VAD still waits out its
        hangover (the turn can be confirmed before the VAD ends the run)."""
        vad = self._vad
        if vad is None or not vad.speaking:
            return None
        return now - vad.silence_ms / 1000.0

    def _vad_speaking(self) -> bool:
        return self._vad is not None and self._vad.speaking

    def _words_ignorable(self) -> bool:
        words = self._barge_words()
        return words is None or self._few_words_ignorable(words)

    def _arm_filler(self, speech_end: float, speech_ms: float) -> None:
        """The caller stopped: if nothing answers within the filler time of that moment,
        "one moment" plays, whatever the recogniser is doing. Not for a cough, nor for words
        that plainly go on, nor while the agent is speaking."""
        if self._filler_spoken or self._ending is not None or self.timers.filler is not None:
            return
        if self._playback.pending or self._llm_turn is not None:
            return
        pending = " ".join(self._pending_user)
        if speech_ms < self.policy.filler_min_speech_ms and not pending:
            return
        if pending and self.policy.unfinished(pending):
            return
        self.timers.filler = speech_end + self.script.llm_filler_after_s

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
        if self._quiet is not None:
            self._quiet.reset()  # loudness from here on: the caller's sound over the agent
        self._playback.pause(now)
        self.timers.resume = None
        out.append(Clear())
        out.append(Emit(CallEvent("barge_in_pause", now, {"turn": self._turn})))

    def _interim_ignorable(self, text: str) -> bool:
        """First words over the paused agent that settle it at once: a short backchannel
        ("uh-huh"), or several of the agent's own words (echo). One word that the agent also
        said ("tomorrow") may begin an answer, so it waits for more."""
        vad = self._vad
        if vad is not None and vad.speech_ms > self.policy.backchannel_max_ms:
            return False
        return self._few_words_ignorable(text)

    def _few_words_ignorable(self, text: str) -> bool:
        if self.policy.is_backchannel(text):
            return True
        return len(text.split()) >= 3 and self._ignorable(text)

    def _barge_words(self) -> str | None:
        return " ".join(self._barge_transcripts) or None

    def _resume(self, now: float, out: list[Action]) -> None:
        """It was a backchannel, a cough or our own echo: carry on where we stopped."""
        self.timers.resume = None
        if self._vad is not None and self._vad.speaking:
            self._backchannel_run = self._run  # its tail does not pause the agent again
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
                    if self._speech_end_at is not None and not self._vad_speaking():
                        self._arm_filler(self._speech_end_at, float("inf"))
                    if self._llm_turn is None and self.policy.unfinished(
                        " ".join(self._pending_user)
                    ):
                        self.timers.filler = None  # they are not done: no "one moment"
                if speech_final and self._pending_user:
                    self._arm_endpoint(now)
                    self._speculate(now, out)
            case Transcript(text=text):  # interim
                if self._playback.paused and text.strip():
                    self._barge_transcripts = [text.strip()]
                    if self._interim_ignorable(text):  # "uh-huh" as the first words: carry on
                        out.append(Emit(CallEvent("backchannel", now, {"by": "interim"})))
                        self._resume(now, out)
                        return
                    speech_ms = self._vad.speech_ms if self._vad is not None else 0.0
                    if self.policy.is_interruption(speech_ms, text, self._agent_text):
                        self._interrupt(now, out, barge_in=True)
            case ProbableEnd(text=text):
                self._speculate(now, out, text)
            case UtteranceEnd():
                if self._pending_user and self.timers.endpoint is None:
                    self._arm_endpoint(now)
                if not self._pending_user and self._llm_turn is None:
                    self.timers.filler = None  # nothing was said after all
            case SpeechStarted():
                self.timers.idle = None
                self._drop_speculation(now, out, "caller went on")
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
        delay_ms = self.policy.endpoint_delay_ms(text)
        # A recogniser that ends utterances early leaves the rest of the silence to us: our
        # VAD's end of speech confirms it (``_confirmed``), or this timer does on its own.
        self._confirm_pending = bool(self._confirm_ms) and not self._silence_seen(now)
        if self._confirm_pending:
            delay_ms += self._confirm_ms
            self._confirm_from_ms = self._vad.voiced_to_ms if self._vad is not None else 0.0
        self.timers.endpoint = now + delay_ms / 1000.0

    def _silence_seen(self, now: float) -> bool:
        """Has our VAD already closed the caller's run of speech (recently)?"""
        vad = self._vad
        recent = self._vad_end_at is not None and now - self._vad_end_at < 2.0
        return vad is not None and not vad.speaking and recent

    def _confirmed(self, now: float) -> None:
        if self._confirm_pending and self.timers.endpoint is not None:
            self.timers.endpoint = max(now, self.timers.endpoint - self._confirm_ms / 1000.0)
        self._confirm_pending = False

    def _user_message(self, text: str) -> Message:
        """The caller's turn as the model sees it (answering the tools of the last reply)."""
        results: tuple[ToolResult, ...] = ()
        if self.history and self.history[-1].role == "assistant" and self.history[-1].tool_calls:
            results = tuple(ToolResult(c.id, "done") for c in self.history[-1].tool_calls)
        return Message("user", text, tool_results=results)

    def _commit_user_turn(self, now: float, out: list[Action], text: str | None = None) -> None:
        self.timers.endpoint = None
        self._confirm_pending = False
        keypad = text is not None
        if text is None:
            text = " ".join(self._pending_user).strip()
            self._pending_user.clear()
        spec = self._take_speculation(text, keypad, now, out)
        if not text or self._ending is not None:
            return
        if self.agent_active and not self._only_filler():
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
        self._tool_filler_spoken = False
        self.history.append(self._user_message(text))
        said = text
        if self._restored and said.startswith(self._restored):  # that part is already recorded
            said = said[len(self._restored) :].strip()
        self._restored = None
        if said:
            out.append(Emit(TranscriptLine("caller", said, now, turn=turn)))
        self._metrics[turn] = TurnMetrics(
            turn,
            speech_end=self._speech_end_at
            if self._speech_end_at is not None
            else self._voiced_end(now),
            stt_final=self._stt_final_at,
            turn_committed=now,
            filler=self._filler_spoken,
        )
        self._speech_end_at = self._stt_final_at = None
        if spec is not None:
            self._adopt(spec, turn, now, out)
        else:
            self._start_llm(turn, now, out)

    def _take_speculation(
        self, text: str, keypad: bool, now: float, out: list[Action]
    ) -> Speculation | None:
        """The speculative reply the turn ``text`` keeps, if any; one that does not fit it is
        dropped."""
        spec, self._spec = self._spec, None
        if spec is None:
            return None
        if not text or self._ending is not None:
            reason = "no turn"
        elif keypad or not spec.matches(text):
            reason = "words changed"
        elif self.agent_active and not self._only_filler():
            reason = "agent busy"
        else:
            return spec
        self._spec = spec
        self._drop_speculation(now, out, reason)
        return None

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


def _went_on(vad: VoiceActivity, since_ms: float) -> bool:
    """Voice again after the stream offset ``since_ms``, past the VAD's own hangover."""
    return vad.voiced_to_ms - since_ms >= 80
