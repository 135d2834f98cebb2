"""What the caller hears sooner: the speculative reply, the filler from the end of speech, the
tool filler and backchannels decided early. Pure session tests on the fake clock."""

from __future__ import annotations

from app.core.audio import MULAW_8K, AudioChunk
from app.core.events import (
    CallStarted,
    CancelLlm,
    CancelSpeech,
    Clear,
    Emit,
    LlmDone,
    LlmText,
    LlmTool,
    PlayAudio,
    PlayMark,
    RunTool,
    Speak,
    StartLlm,
    SttUpdate,
    ToolDone,
    TtsAudio,
    TtsDone,
)
from app.core.providers import LlmUsage, ProbableEnd, SpeechStarted, ToolCall, Transcript
from app.core.records import CallEvent, TranscriptLine, TurnMetrics, Usage
from app.core.turns import TurnPolicy

from .harness import Harness, of

EARLY = TurnPolicy(endpointing_ms=0, barge_in_min_speech_ms=120)


def records(h: Harness, kind: type) -> list:  # type: ignore[type-arg]
    return [a.record for a in h.actions if isinstance(a, Emit) and isinstance(a.record, kind)]


def events(h: Harness, kind: str) -> list[CallEvent]:
    return [e for e in records(h, CallEvent) if e.kind == kind]


def final(text: str) -> SttUpdate:
    return SttUpdate(Transcript(text, is_final=True, speech_final=True))


def early_recogniser(**overrides: object) -> Harness:
    """A session whose recogniser ends utterances 200 ms early (Deepgram asked for a short
    endpointing): our VAD's end of speech, or 200 ms more, confirms the turn."""
    h = Harness.create(policy=EARLY, **overrides)
    h.session._confirm_ms = 200
    h.start()
    return h


def audio(ms: int) -> AudioChunk:
    return AudioChunk(bytes(8 * ms), MULAW_8K)


def test_a_kept_speculation_plays_only_once_the_turn_is_confirmed_and_saves_its_time() -> None:
    h = early_recogniser()
    h.caller(800)
    h.caller(100, voiced=False)  # the recogniser's early end: ~100 ms into the silence
    out = h.send(final("What time do you open tomorrow?"))
    (start,) = of(StartLlm, out)
    assert start.request.messages[-1].content == "What time do you open tomorrow?"
    assert not records(h, TranscriptLine)[1:]  # the turn is not taken yet
    # The model and the speech run ahead; nothing reaches the caller.
    out = h.send(LlmText(start.turn, "We open at eight. "))
    out += h.send(LlmText(start.turn, "See you then!"))
    speaks = of(Speak, out)
    assert [s.text for s in speaks] == ["We open at eight."]
    out += h.send(TtsAudio(speaks[0].utterance, audio(400)))
    out += h.send(TtsDone(speaks[0].utterance))
    out += h.send(LlmDone(start.turn, LlmUsage(900, 12)))
    assert not of(PlayAudio, out) and not of(PlayMark, out)
    assert [s.text for s in of(Speak, out)] == ["We open at eight.", "See you then!"]
    # Our VAD closes the run (300 ms of silence): the turn is confirmed, the audio goes out.
    out = h.caller(250, voiced=False)
    assert of(PlayAudio, out) and of(PlayMark, out)
    assert not of(StartLlm, out) and not of(CancelLlm, out)
    caller_lines = [r for r in records(h, TranscriptLine) if r.role == "caller"]
    assert caller_lines[-1].text == "What time do you open tomorrow?"
    (kept,) = events(h, "speculation_kept")
    assert kept.detail["ms"] >= 100
    assert h.session.history[-1].role == "assistant"
    assert h.session.history[-1].content == "We open at eight. See you then!"
    (usage,) = records(h, Usage)
    assert usage.llm_input_tokens == 900 and usage.llm_wasted_input_tokens == 0
    (turn,) = records(h, TurnMetrics)
    assert turn.first_audio_sent == turn.turn_committed  # no wait after the confirmation


def test_different_final_words_discard_the_speculation_and_count_its_tokens() -> None:
    h = early_recogniser()
    h.caller(600)
    h.caller(100, voiced=False)
    (spec,) = of(StartLlm, h.send(SttUpdate(ProbableEnd("I want to cancel"))))
    h.send(LlmText(spec.turn, "Sure, which appointment"))
    out = h.send(final("I want to cancel my cleaning"))
    assert CancelLlm(spec.turn) in out
    (restart,) = of(StartLlm, out)
    assert restart.turn != spec.turn
    assert restart.request.messages[-1].content == "I want to cancel my cleaning"
    assert events(h, "speculation_discarded")[0].detail["reason"] == "words changed"
    (wasted,) = records(h, Usage)
    assert wasted.llm_wasted_input_tokens > 0 and wasted.llm_wasted_output_tokens > 0
    assert wasted.llm_input_tokens == wasted.llm_wasted_input_tokens
    # A late token of the cancelled request is ignored.
    assert not h.send(LlmText(spec.turn, " would you like to cancel?"))


def test_the_caller_speaking_again_cancels_the_speculation_and_its_speech() -> None:
    h = early_recogniser()
    h.caller(600)
    h.caller(100, voiced=False)
    (spec,) = of(StartLlm, h.send(final("I'd like to book")))
    (speak,) = of(Speak, h.send(LlmText(spec.turn, "Of course.")))  # a plain first sentence
    out = h.caller(200)  # they go on: "... for Friday"
    assert CancelLlm(spec.turn) in out and of(CancelSpeech, out)
    assert events(h, "speculation_discarded")[0].detail["reason"] == "caller went on"
    assert not of(PlayAudio, h.send(TtsAudio(speak.utterance, audio(300))))  # dropped
    assert not [r for r in records(h, TranscriptLine) if r.role == "caller"]


def test_a_recogniser_retraction_cancels_the_speculation() -> None:
    h = early_recogniser()
    h.caller(600)
    (spec,) = of(StartLlm, h.send(SttUpdate(ProbableEnd("Can I come in on Friday"))))
    out = h.send(SttUpdate(SpeechStarted()))  # Flux TurnResumed
    assert CancelLlm(spec.turn) in out


def test_tools_of_a_speculative_reply_wait_for_the_confirmation() -> None:
    h = early_recogniser()
    h.caller(600)
    h.caller(100, voiced=False)
    (spec,) = of(StartLlm, h.send(final("Please put me through to a person")))
    call = ToolCall("t1", "collect_digits", {"field": "account"})
    out = h.send(LlmTool(spec.turn, call))
    out += h.send(LlmDone(spec.turn))
    assert not of(RunTool, out) and not events(h, "tool")
    out = h.caller(250, voiced=False)  # confirmed
    assert RunTool(call) in out


def test_an_unfinished_turn_is_not_speculated_on() -> None:
    h = early_recogniser()
    h.caller(600)
    h.caller(100, voiced=False)
    assert not of(StartLlm, h.send(final("My number is 555 123")))
    assert not of(StartLlm, h.send(SttUpdate(ProbableEnd("I'd like to book and"))))


def test_the_filler_runs_from_the_end_of_speech_not_from_a_slow_transcript() -> None:
    h = Harness.create(policy=EARLY, llm_filler_after_s=1.0)
    h.start()
    h.caller(800)
    speech_end = h.now
    out = h.caller(1000, voiced=False)
    out += h.advance(300)  # the recogniser is still working 1.3 s after the caller stopped
    (filler,) = of(Speak, out)  # (~1.0 s plus the VAD's hangover)
    assert filler.cached and filler.text == "One moment."
    filler_at = next(e.at for e in events(h, "filler"))
    assert filler_at - speech_end <= 1.3
    h.synthesize(filler, 700)
    out = h.send(final("Do you have anything on Saturday?")) + h.advance(0)  # 1.5 s late
    (start,) = of(StartLlm, out)
    assert not of(Clear, out) and not of(CancelSpeech, out) and not events(h, "barge_in")
    assert not [s for s in of(Speak, h.advance(1500)) if s.text == "One moment."]  # only once
    out = h.send(LlmText(start.turn, "Yes, at nine. ")) + h.send(LlmDone(start.turn))
    (answer,) = of(Speak, out)
    h.synthesize(answer, 500)
    (turn,) = records(h, TurnMetrics)
    assert turn.filler


def test_a_cough_or_unfinished_words_get_no_filler() -> None:
    h = Harness.create(policy=EARLY)
    h.start()
    h.caller(200)  # a cough
    assert not of(Speak, h.caller(2000, voiced=False))
    h.caller(700)
    h.send(SttUpdate(Transcript("my number is 555", is_final=True)))
    assert not of(Speak, h.caller(1500, voiced=False))


def model_calls_a_tool(words: str, call: ToolCall) -> Harness:
    """The caller says ``words``; the model answers with nothing but ``call``."""
    h = Harness.create(policy=EARLY)
    h.start()
    h.caller(600)
    h.caller(400, voiced=False)
    (start,) = of(StartLlm, h.send(final(words)) + h.advance(0))
    h.send(LlmTool(start.turn, call))
    h.send(LlmDone(start.turn))
    return h


def test_a_slow_tool_gets_its_own_filler_once_the_agent_is_silent() -> None:
    h = model_calls_a_tool("What is my balance", ToolCall("t9", "lookup", {}))
    out = h.advance(1100)
    (say,) = of(Speak, out)
    assert say.cached and say.text == "Let me check that for you."
    h.send(ToolDone("t9"))
    # A tool that acts on the line (keys to a menu) is never talked over.
    h2 = model_calls_a_tool("press one", ToolCall("k", "send_digits", {"digits": "1"}))
    assert not [s for s in of(Speak, h2.advance(3000)) if "check" in s.text]


def test_a_quick_tool_gets_no_filler() -> None:
    h = model_calls_a_tool("What is my balance", ToolCall("t1", "lookup", {}))
    h.advance(300)
    h.send(ToolDone("t1"))
    assert not [s for s in of(Speak, h.advance(2000)) if "check" in s.text]


def test_backchannel_words_in_the_first_interim_resume_the_agent_at_once() -> None:
    h = Harness.create(policy=EARLY)
    out = h.send(CallStarted())
    h.synthesize(of(Speak, out)[0], 4000)
    h.advance(500)
    assert of(Clear, h.caller(160))
    paused_at = h.now
    out = h.send(SttUpdate(Transcript("uh huh", is_final=False)))
    assert of(PlayAudio, out) and events(h, "barge_in_resumed")
    assert (h.now - paused_at) * 1000 < 50
    assert not events(h, "barge_in")


def test_one_word_the_agent_also_said_waits_for_more_before_resuming() -> None:
    """One word ("tomorrow") over an agent asking about tomorrow may begin an answer: it is not
    taken for echo on its own; a longer interim decides (here an interruption)."""
    h = Harness.create(policy=EARLY)
    out = h.send(CallStarted())
    h.synthesize(of(Speak, out)[0], 4000)
    h.advance(500)
    assert of(Clear, h.caller(160))
    agent = h.session._agent_text
    assert agent, "the paused agent's words are known"
    word = agent.split()[-1].strip(".,?!")
    out = h.send(SttUpdate(Transcript(word, is_final=False)))
    assert not of(PlayAudio, out) and not events(h, "barge_in_resumed")
    h.send(SttUpdate(Transcript(f"{word} at ten in the morning", is_final=False)))
    assert events(h, "barge_in") and not events(h, "barge_in_resumed")


def test_a_short_uh_huh_resumes_the_agent_within_300_ms_of_the_pause() -> None:
    """By its shape: 400 ms of sound, then its energy drops; webrtcvad's hangover is not
    waited for, and the tail of that sound does not pause the agent again."""
    h = Harness.create()
    out = h.send(CallStarted())
    h.synthesize(of(Speak, out)[0], 4000)
    h.advance(500)
    paused_at = resumed_at = None
    clears = 0
    for _ in range(400 // 20):
        step = h.caller(20)
        clears += len(of(Clear, step))
        if paused_at is None and of(Clear, step):
            paused_at = h.now
    for _ in range(30):
        step = h.caller(20, voiced=False)
        clears += len(of(Clear, step))
        if resumed_at is None and of(PlayAudio, step):
            resumed_at = h.now
    assert paused_at is not None and resumed_at is not None
    assert (resumed_at - paused_at) * 1000 <= 300  # measured: 280 ms (80 ms after the sound)
    assert clears == 1 and [e.detail["by"] for e in events(h, "backchannel")] == ["shape"]
    assert not events(h, "barge_in")


def test_the_rest_of_an_uh_huh_let_go_by_its_first_words_does_not_pause_again() -> None:
    h = Harness.create(policy=EARLY)
    out = h.send(CallStarted())
    h.synthesize(of(Speak, out)[0], 4000)
    h.advance(500)
    assert of(Clear, h.caller(160))
    out = h.send(SttUpdate(Transcript("uh huh", is_final=False)))
    assert of(PlayAudio, out)
    assert not of(Clear, h.caller(200))  # still saying it: the agent carries on
    # ... but speech that goes on past a backchannel's length takes the floor after all
    assert of(Clear, h.caller(400))
