"""Session logic on a fake clock: no sockets, no sleeps."""

from __future__ import annotations

from app.core.events import (
    CallStarted,
    CancelLlm,
    CancelSpeech,
    Clear,
    DtmfDigit,
    Emit,
    EndCall,
    LlmDone,
    LlmFailed,
    LlmText,
    LlmTool,
    MarkReached,
    PlayAudio,
    PlayMark,
    RemoteHangup,
    Shutdown,
    Speak,
    StartLlm,
    SttUpdate,
    TtsAudio,
    TtsDone,
    TtsFailed,
)
from app.core.providers import ToolCall, Transcript, UtteranceEnd
from app.core.records import CallEnded, CallEvent, TranscriptLine, TurnMetrics
from app.core.turns import TurnPolicy

from .harness import Harness, of


def final(text: str) -> SttUpdate:
    return SttUpdate(Transcript(text, is_final=True, speech_final=True))


def records(h: Harness, kind: type) -> list:  # type: ignore[type-arg]
    return [a.record for a in h.actions if isinstance(a, Emit) and isinstance(a.record, kind)]


def events(h: Harness, name: str) -> list[CallEvent]:
    return [r for r in records(h, CallEvent) if r.kind == name]


def take_turn(h: Harness, text: str) -> StartLlm:
    h.caller(600)
    h.caller(500, voiced=False)
    out = h.send(final(text))
    out += h.advance(0)
    starts = of(StartLlm, out)
    assert len(starts) == 1, out
    return starts[0]


def test_greeting_is_cached_speech_then_a_mark() -> None:
    h = Harness.create()
    out = h.send(CallStarted())
    (speak,) = of(Speak, out)
    assert speak.cached and speak.text == "Hello, how can I help?"
    produced = h.synthesize(speak, 1500)
    assert of(PlayAudio, produced) and of(PlayMark, produced)
    assert events(h, "greeting_first_audio")[0].detail["ms"] == 0.0
    h.advance(1500)
    h.send(MarkReached(of(PlayMark, produced)[0].name))
    (line,) = records(h, TranscriptLine)
    assert line.role == "agent" and not line.interrupted


def test_turn_goes_to_the_model_with_the_history_and_variables() -> None:
    h = Harness.create()
    h.start()
    start = take_turn(h, "I'd like to book an appointment tomorrow at ten.")
    assert start.request.system == "You are Ava."
    assert [m.role for m in start.request.messages] == ["user"]
    assert start.request.messages[0].content.startswith("I'd like to book")
    assert {t.name for t in start.request.tools} >= {"end_call"}
    caller_lines = [r for r in records(h, TranscriptLine) if r.role == "caller"]
    assert caller_lines[0].text.startswith("I'd like")


def test_reply_streams_into_speech_sentence_by_sentence_before_the_model_finishes() -> None:
    h = Harness.create()
    h.start()
    start = take_turn(h, "book me in tomorrow at ten")
    out = h.send(LlmText(start.turn, "Certainly. I have booked "))
    assert [s.text for s in of(Speak, out)] == ["Certainly."]
    out = h.send(LlmText(start.turn, "you for tomorrow at 10 a.m. with Dr. Lee. Anything else?"))
    assert [s.text for s in of(Speak, out)] == [
        "I have booked you for tomorrow at 10 a.m. with Dr. Lee."
    ]
    out = h.send(LlmDone(start.turn))
    assert [s.text for s in of(Speak, out)] == ["Anything else?"]


def test_turn_metrics_cover_every_stage() -> None:
    h = Harness.create()
    h.start()
    start = take_turn(h, "what are your opening hours")
    h.advance(200)
    out = h.send(LlmText(start.turn, "We open at eight. "))
    out += h.send(LlmDone(start.turn))
    h.advance(50)
    h.synthesize(of(Speak, out)[0], 800)
    (metrics,) = records(h, TurnMetrics)
    stages = metrics.stages_ms()
    assert stages["llm_first_token"] == 200.0
    assert stages["tts_first_audio"] == 50.0
    # speech end is measured from the VAD (hangover removed), before the final transcript
    assert stages["endpoint_to_stt_final"] is not None and stages["endpoint_to_stt_final"] > 0
    assert stages["total"] >= 250.0


def reply(h: Harness, text: str, ms_first: int = 4000) -> tuple[StartLlm, list[Speak]]:
    """A caller turn, then the model's reply; the first sentence's audio is sent at once."""
    start = take_turn(h, "can I book for tomorrow")
    out = h.send(LlmText(start.turn, text))
    out += h.send(LlmDone(start.turn))
    speaks = of(Speak, out)
    h.synthesize(speaks[0], ms_first)
    return start, speaks


SENTENCE = "Of course, I can book you in tomorrow morning at ten or in the afternoon at three."


def test_barge_in_mid_sentence_clears_at_once_and_trims_history_to_what_was_heard() -> None:
    h = Harness.create()
    h.start()
    start, speaks = reply(h, SENTENCE + " Which would you prefer?")
    assert len(speaks) == 2
    h.advance(1200)
    # the caller talks over the agent 1.2 s into a 4 s sentence: the transport is cleared as
    # soon as the VAD has 120 ms of speech (the agent pauses) ...
    out = h.caller(200)
    assert of(Clear, out) and not of(CancelSpeech, out)
    assert events(h, "barge_in_pause")
    # ... and speech that goes on is a real interruption: the reply is dropped
    out = h.caller(700)
    assert of(CancelSpeech, out) and CancelLlm(start.turn) not in out  # the model had finished
    assert not of(Clear, out)  # already cleared
    (barge,) = events(h, "barge_in")
    heard = [r for r in records(h, TranscriptLine) if r.role == "agent" and r.interrupted]
    assert len(heard) == 1
    # heard up to the pause (~1.3 s of 4 s): about a third of the sentence
    assert SENTENCE.startswith(heard[0].text) and 15 < len(heard[0].text) < len(SENTENCE) / 2
    last = h.session.history[-1]
    assert last.role == "assistant" and last.interrupted and last.content == heard[0].text
    # Twilio echoes the cleared marks at once: they must not count as played
    mark = of(PlayMark, h.actions)[-1].name
    h.send(MarkReached(mark))
    assert [r for r in records(h, TranscriptLine) if r.role == "agent"][-1].interrupted
    # audio for the cancelled second sentence is dropped if it still arrives
    late = h.send(TtsAudio(speaks[1].utterance, of(PlayAudio, h.actions)[0].chunk))
    assert not of(PlayAudio, late)


def test_interim_words_confirm_an_interruption_before_the_speech_is_long() -> None:
    h = Harness.create()
    h.start()
    start, _ = reply(h, SENTENCE)
    h.advance(1000)
    h.caller(200)
    out = h.send(SttUpdate(Transcript("wait, I said Friday", is_final=False)))
    assert of(CancelSpeech, out) and events(h, "barge_in")


def test_mm_hmm_pauses_then_resumes_where_it_stopped() -> None:
    h = Harness.create()
    h.start()
    start, speaks = reply(h, SENTENCE)
    h.advance(1000)
    out = h.caller(400)  # "mm-hmm"
    assert of(Clear, out)
    paused_at = h.now
    # Short speech, then a gap, no words that count: a backchannel by its shape, resumed
    # without waiting for the recogniser.
    out = h.caller(200, voiced=False)
    assert events(h, "barge_in_resumed")
    resumed_at = next(e.at for e in events(h, "barge_in_resumed"))
    assert (resumed_at - paused_at) * 1000 <= 400  # 200 ms more speech, the VAD's hangover
    resent = of(PlayAudio, out)
    # the rest of the sentence goes out again, from about where it stopped (~1.2 s in)
    assert 2500 < sum(a.chunk.duration_ms for a in resent) < 3000
    h.caller(300, voiced=False)
    later = h.send(final("Mm-hmm."))  # the words confirm it: nothing changes
    assert not of(CancelSpeech, later) and not events(h, "barge_in")
    assert of(PlayMark, out)[0].name == f"u{speaks[0].utterance}.2"
    assert events(h, "barge_in_resumed")
    assert not [m for m in h.session.history if m.interrupted]


def test_a_cough_with_no_words_resumes_after_a_short_wait() -> None:
    h = Harness.create()
    h.start()
    reply(h, SENTENCE)
    h.advance(800)
    assert of(Clear, h.caller(200))
    out = h.caller(600, voiced=False)
    out += h.advance(1000)
    assert of(PlayAudio, out) and events(h, "barge_in_resumed")
    assert not events(h, "barge_in")


def test_the_agents_own_echo_does_not_interrupt_it() -> None:
    h = Harness.create()
    h.start()
    reply(h, SENTENCE)
    h.advance(800)
    h.caller(300)
    out = h.send(final("I can book you in tomorrow"))  # the speakerphone carried our words back
    assert not events(h, "barge_in") and events(h, "barge_in_resumed")
    assert of(PlayAudio, out)


def test_short_noise_during_agent_speech_does_not_interrupt() -> None:
    h = Harness.create()
    out = h.send(CallStarted())
    h.synthesize(of(Speak, out)[0], 3000)
    out = h.caller(100)  # a cough
    assert not of(Clear, out)
    assert not events(h, "barge_in")


def test_backchannel_final_transcript_during_agent_speech_is_ignored() -> None:
    h = Harness.create()
    out = h.send(CallStarted())
    h.synthesize(of(Speak, out)[0], 3000)
    out = h.send(final("mm-hmm"))
    out += h.advance(100)
    assert not of(StartLlm, out) and not of(Clear, out)
    assert events(h, "backchannel")


def test_caller_who_keeps_talking_while_the_model_thinks_keeps_the_turn() -> None:
    h = Harness.create()
    h.start()
    start = take_turn(h, "I'd like to book")
    out = h.caller(400)  # they were not finished
    assert CancelLlm(start.turn) in out
    assert events(h, "turn_resumed")
    h.caller(400, voiced=False)
    out = h.send(final("for tomorrow at ten"))
    out += h.advance(0)
    (restart,) = of(StartLlm, out)
    assert restart.request.messages[-1].content == "I'd like to book for tomorrow at ten"


def test_slow_model_gets_a_cached_filler_then_a_fallback_and_the_call_goes_on() -> None:
    h = Harness.create()
    h.start()
    start = take_turn(h, "hello?")
    out = h.advance(1300)
    (filler,) = of(Speak, out)
    assert filler.cached and filler.text == "One moment."
    out = h.advance(5000)
    assert CancelLlm(start.turn) in out
    (fallback,) = of(Speak, out)
    assert fallback.cached and fallback.text.startswith("Sorry")
    assert any(e.detail.get("type") == "timeout" for e in events(h, "provider_error"))
    # the caller can try again
    take_turn(h, "what time do you open")


def test_model_failure_speaks_the_fallback() -> None:
    h = Harness.create()
    h.start()
    start = take_turn(h, "hello")
    out = h.send(LlmFailed(start.turn, "OverloadedError"))
    (fallback,) = of(Speak, out)
    assert fallback.cached
    assert not h.session.ended


def test_tts_failure_mid_reply_falls_back_to_the_cached_phrase() -> None:
    h = Harness.create()
    h.start()
    start = take_turn(h, "hello")
    out = h.send(LlmText(start.turn, "Hello there. How can I help you today? "))
    speak = of(Speak, out)[0]
    out = h.send(TtsFailed(speak.utterance, "ApiError"))
    assert CancelLlm(start.turn) in out and of(CancelSpeech, out)
    (fallback,) = of(Speak, out)
    assert fallback.cached


def test_end_call_tool_says_goodbye_then_hangs_up_after_it_played() -> None:
    h = Harness.create()
    h.start()
    start = take_turn(h, "that's all, bye")
    h.send(LlmTool(start.turn, ToolCall("t1", "end_call", {})))
    out = h.send(LlmDone(start.turn))
    (goodbye,) = of(Speak, out)
    assert goodbye.cached and goodbye.text == "Goodbye!"
    assert not of(EndCall, out)
    out = h.play_out(out)
    assert of(EndCall, out)
    assert records(h, CallEnded)[0].reason == "end_call"
    assert h.session.ended


def test_end_call_after_spoken_goodbye_waits_for_its_mark() -> None:
    h = Harness.create()
    h.start()
    start = take_turn(h, "bye")
    out = h.send(LlmText(start.turn, "Thanks for calling, goodbye!"))
    out += h.send(LlmTool(start.turn, ToolCall("t1", "end_call", {})))
    out += h.send(LlmDone(start.turn))
    assert [s.text for s in of(Speak, out)] == ["Thanks for calling, goodbye!"]
    assert not of(EndCall, out)
    assert of(EndCall, h.play_out(out))


def test_idle_caller_is_prompted_then_the_call_ends() -> None:
    h = Harness.create(idle_timeout_s=10.0)
    h.start()
    out = h.advance(10_100)
    (prompt,) = of(Speak, out)
    assert prompt.text == "Are you still there?"
    out = h.play_out(out)
    out += h.advance(10_100)
    goodbye = of(Speak, out)
    assert goodbye and goodbye[0].text == "Goodbye!"
    assert of(EndCall, h.play_out(out))
    assert h.session.end_reason == "idle"


def test_max_call_length_ends_the_call() -> None:
    h = Harness.create(max_call_s=30.0, idle_timeout_s=100.0)
    h.start()
    out = h.advance(30_000)
    assert [s.text for s in of(Speak, out)] == ["Goodbye!"]
    assert of(EndCall, h.play_out(out))
    assert h.session.end_reason == "max call length"


def test_dtmf_digits_reach_the_model_after_hash_or_a_pause() -> None:
    h = Harness.create()
    h.start()
    for d in "12#":
        out = h.send(DtmfDigit(d))
    (start,) = of(StartLlm, out)
    assert start.request.messages[-1].content == "[keypad: 1 2 #]"
    h.play_out(h.send(LlmText(start.turn, "Thanks.")) + h.send(LlmDone(start.turn)))
    h.send(DtmfDigit("9"))
    out = h.advance(2100)
    (start,) = of(StartLlm, out)
    assert start.request.messages[-1].content == "[keypad: 9]"


def test_a_twenty_digit_keypad_entry_is_one_turn() -> None:
    """Fields take up to 32 digits: the session must not cut an entry at 16."""
    h = Harness.create()
    h.start()
    starts = []
    for d in "12345678901234567890#":
        starts += of(StartLlm, h.send(DtmfDigit(d)))
    (start,) = starts
    entry = " ".join("12345678901234567890#")
    assert start.request.messages[-1].content == f"[keypad: {entry}]"


def test_utterance_end_closes_a_turn_the_recogniser_left_open() -> None:
    h = Harness.create()
    h.start()
    h.send(SttUpdate(Transcript("yes please", is_final=True, speech_final=False)))
    assert not of(StartLlm, h.advance(100))
    out = h.send(SttUpdate(UtteranceEnd()))
    out += h.advance(0)
    assert of(StartLlm, out)


def test_a_complete_short_answer_is_replied_to_within_the_normal_endpointing_time() -> None:
    h = Harness.create(policy=TurnPolicy(endpointing_ms=300))
    h.start()
    h.caller(500)
    h.caller(500, voiced=False)
    out = h.send(final("Yes, tomorrow at ten works."))
    assert of(StartLlm, out)  # the model starts on it at once (speculatively) ...
    assert not of(TranscriptLine, records_of(h.advance(250)))  # ... the turn is taken later
    assert of(TranscriptLine, records_of(h.advance(60)))


def test_without_speculation_the_model_starts_when_the_turn_is_taken() -> None:
    h = Harness.create(policy=TurnPolicy(endpointing_ms=300), speculate=False)
    h.start()
    h.caller(500)
    h.caller(500, voiced=False)
    assert not of(StartLlm, h.send(final("Yes, tomorrow at ten works.")) + h.advance(250))
    assert of(StartLlm, h.advance(60))


def records_of(actions: list) -> list:  # type: ignore[type-arg]
    return [a.record for a in actions if isinstance(a, Emit)]


def test_a_pause_while_reading_out_a_phone_number_does_not_end_the_turn() -> None:
    h = Harness.create(policy=TurnPolicy(endpointing_ms=300))
    h.start()
    h.caller(1200)
    h.caller(400, voiced=False)  # the recogniser closes the utterance here ...
    h.send(final("My number is 555 123"))
    assert not of(StartLlm, h.caller(1100, voiced=False))  # ... a 1.5 s pause in all
    h.caller(900)
    h.caller(400, voiced=False)
    out = h.send(final("4567."))
    out += h.advance(350)
    (start,) = of(StartLlm, out)
    assert start.request.messages[-1].content == "My number is 555 123 4567."


def test_an_unfinished_turn_still_ends_at_the_upper_bound() -> None:
    h = Harness.create(policy=TurnPolicy(unfinished_wait_ms=2000, max_endpoint_ms=2500))
    h.start()
    h.send(final("I'd like to book and"))
    assert not of(StartLlm, h.advance(1900))
    assert of(StartLlm, h.advance(200))


def test_shutdown_interrupts_and_says_goodbye() -> None:
    h = Harness.create()
    out = h.send(CallStarted())
    h.synthesize(of(Speak, out)[0], 3000)
    out = h.send(Shutdown("server shutting down"))
    assert of(Clear, out)
    (goodbye,) = of(Speak, out)
    assert goodbye.text == "Goodbye!"
    assert of(EndCall, h.play_out(out))


def test_remote_hangup_ends_without_hanging_up_again() -> None:
    h = Harness.create()
    h.start()
    out = h.send(RemoteHangup())
    assert not of(EndCall, out)
    assert records(h, CallEnded)[0].reason == "caller hung up"
    assert h.session.ended
    assert h.send(TtsDone(1)) == []


def test_history_after_tool_call_carries_tool_results() -> None:
    h = Harness.create()
    h.start()
    start = take_turn(h, "put me through to someone")
    out = h.send(LlmText(start.turn, "Let me note that. "))
    out += h.send(LlmTool(start.turn, ToolCall("t9", "set_outcome", {"outcome": "callback"})))
    h.play_out(out + h.send(LlmDone(start.turn)))
    nxt = take_turn(h, "thanks")
    msgs = nxt.request.messages
    assert msgs[-2].role == "assistant" and msgs[-2].tool_calls[0].id == "t9"
    assert msgs[-1].tool_results[0].call_id == "t9"


def test_the_tail_of_speech_already_committed_does_not_take_the_turn_back() -> None:
    h = Harness.create()
    h.start()
    h.caller(800)
    # the recogniser closes the turn while the VAD still hears the end of the same speech run
    out = h.send(final("what are your opening hours"))
    out += h.advance(0)
    (start,) = of(StartLlm, out)
    out = h.caller(300)  # same run goes on a little
    assert CancelLlm(start.turn) not in out
    assert not events(h, "turn_resumed")


def test_a_resumed_turn_records_each_caller_line_once() -> None:
    h = Harness.create()
    h.start()
    take_turn(h, "I'd like to book")
    h.caller(400)
    h.caller(500, voiced=False)
    h.send(final("for tomorrow at ten"))
    h.advance(0)
    caller_lines = [r.text for r in records(h, TranscriptLine) if r.role == "caller"]
    assert caller_lines == ["I'd like to book", "for tomorrow at ten"]


def test_a_model_end_of_turn_is_answered_at_once_even_when_it_looks_unfinished() -> None:
    h = Harness.create(policy=TurnPolicy(endpointing_ms=300))
    h.session.model_end_of_turn = True
    h.start()
    out = h.send(final("My number is 555 123"))
    out += h.advance(0)
    assert of(StartLlm, out)


def test_the_default_script_offers_no_transfer_without_a_target() -> None:
    from app.config import AgentSettings

    h = Harness.create()
    h.start()
    (start,) = of(
        StartLlm,
        h.send(SttUpdate(Transcript("hi there", is_final=True, speech_final=True))) + h.advance(50),
    )
    assert [t.name for t in start.request.tools] == ["end_call"]
    assert [t.name for t in AgentSettings().script().tools] == ["end_call"]


def test_the_phase_follows_the_conversation() -> None:
    from app.core.session_state import Phase

    h = Harness.create()
    assert h.session.phase is Phase.LISTENING
    out = h.send(CallStarted())
    assert h.session.phase is Phase.SPEAKING  # the greeting
    h.play_out(out)
    assert h.session.phase is Phase.LISTENING
    out = h.send(SttUpdate(Transcript("hi there", is_final=True, speech_final=True)))
    out += h.advance(50)
    assert h.session.phase is Phase.THINKING and of(StartLlm, out)
