"""The agent's side of a call session: the model's reply, streamed sentence by sentence into
speech, its playback marks (what the caller heard), tools, fillers and fallbacks."""

from __future__ import annotations

from app.core.audio import AudioChunk
from app.core.events import (
    Action,
    CancelLlm,
    CancelSpeech,
    Emit,
    PlayAudio,
    PlayMark,
    RunTool,
    Speak,
    StartLlm,
)
from app.core.playback import Utterance
from app.core.providers import (
    LlmRequest,
    Message,
    ToolCall,
)
from app.core.records import CallEvent, TranscriptLine
from app.core.script import TERMINAL_TOOLS, build_request
from app.core.session_state import SessionState, provider_error
from app.core.text import SentenceSplitter


class AgentSpeech(SessionState):
    def _start_llm(self, turn: int, now: float, out: list[Action]) -> None:
        self._llm_seq += 1  # each request its own id: a cancelled one's late events are ignored
        self._llm_turn = self._llm_seq
        self._llm_text = []
        self._llm_tools = []
        self._spoke_in_turn = False
        self._splitter = SentenceSplitter()
        self._arm_reply_timers(turn, now)
        out.append(StartLlm(self._llm_seq, self._request()))

    def _arm_reply_timers(self, turn: int, now: float) -> None:
        """The filler runs from the end of the caller's speech (not from when the recogniser
        got round to its transcript); the give-up time from the request."""
        metrics = self._metrics.get(turn)
        spoke_until = metrics.speech_end if metrics is not None else None
        if not self._filler_spoken:
            start = now if spoke_until is None else min(now, spoke_until)
            self.timers.filler = start + self.script.llm_filler_after_s
        self.timers.giveup = now + self.script.llm_giveup_after_s

    def _say_filler(self, now: float, out: list[Action]) -> None:
        if self._filler_spoken or self._ending is not None or self._playback.audible(now):
            return
        if self._spec is not None and self._spec.utterances:
            return  # its speech is being made: the answer is on its way
        self._filler_spoken = True
        metrics = self._metrics.get(self._turn) if self._llm_turn is not None else None
        if metrics is not None:
            metrics.filler = True
        out.append(Emit(CallEvent("filler", now)))
        self._speak(self.script.filler, self._turn, out, cached=True)

    def _say_tool_filler(self, now: float, out: list[Action]) -> None:
        if not self._tools_running or self._ending is not None or self._tool_filler_spoken:
            return
        if self._playback.pending:  # still speaking: look again when it may have finished
            self.timers.tool = now + 0.5
            return
        self._tool_filler_spoken = True
        out.append(Emit(CallEvent("tool_filler", now)))
        self._speak(self.script.tool_filler, self._turn, out, cached=True)

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
        self.timers.filler = self.timers.giveup = None
        self._llm_text.append(text)
        for sentence in self._splitter.push(text):
            self._speak(sentence, self._turn, out)

    def _on_tool(self, call: ToolCall, now: float, out: list[Action]) -> None:
        self._llm_tools.append(call)
        out.append(Emit(CallEvent("tool", now, {"name": call.name})))
        if call.name == "end_call":
            return
        out.append(RunTool(call))
        if call.name not in TERMINAL_TOOLS and call.name not in self.script.silent_tools:
            self._tools_running.add(call.id)
            if self.timers.tool is None:
                self.timers.tool = now + self.script.tool_filler_after_s

    def _on_llm_done(self, now: float, out: list[Action]) -> None:
        for sentence in self._splitter.flush():
            self._speak(sentence, self._turn, out)
        reply = "".join(self._llm_text).strip()
        self._llm_turn = None
        self._filler_spoken = False
        self.timers.filler = self.timers.giveup = None
        if reply or self._llm_tools:
            self.history.append(Message("assistant", reply, tool_calls=tuple(self._llm_tools)))
        terminal = [c for c in self._llm_tools if c.name in TERMINAL_TOOLS]
        if terminal:
            reason = terminal[0].name
            self._ending = reason
            self.timers.end = now + self.script.ending_reply_grace_s
            if not reply:
                self._speak(self.script.goodbye, self._turn, out, cached=True)
            self._maybe_end(now, out)
        else:
            self._arm_idle(now)

    def _on_llm_failed(self, reason: str, now: float, out: list[Action]) -> None:
        self._llm_turn = None
        self._filler_spoken = False
        out.append(provider_error("llm", reason, now))
        self._fallback(now, out)

    def _fallback(self, now: float, out: list[Action]) -> None:
        """A provider failed this turn: say the cached fallback (unless something of the reply
        was already said) and carry on listening."""
        self.timers.filler = self.timers.giveup = None
        metrics = self._metrics.get(self._turn)
        if metrics is not None:
            metrics.fallback = True
        if not self._spoke_in_turn or not self._playback.turn_pending(self._turn):
            self._speak(self.script.fallback, self._turn, out, cached=True)
        self._arm_idle(now)

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
            if utt.cached and utt.text in (self.script.filler, self.script.tool_filler):
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
        out.append(provider_error("tts", reason, now))
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
