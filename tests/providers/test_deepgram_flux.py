"""Deepgram Flux adapter: the real SDK v2 client against the wire-compatible fake on 127.0.0.1."""

from __future__ import annotations

import logging
import time

import pytest
from deepgram.listen.v2.types import ListenV2TurnInfo

from app.config import ConfigError, Settings
from app.core.audio import pcm16_to_mulaw
from app.core.providers import (
    CallInfo,
    ProbableEnd,
    SpeechStarted,
    SttEvent,
    SttFailure,
    Transcript,
)
from app.doctor import diagnose
from app.logs import JsonFormatter
from app.providers.deepgram import DeepgramError
from app.providers.deepgram_flux import FluxOptions, FluxStt, FluxTurns, fill_silence
from app.providers.registry import build_one, choose
from tests.fakes import tonecode
from tests.fakes.flux_server import FluxEngine, FluxFake, FluxQuery
from tests.providers.test_deepgram import collect, feed
from tests.providers.test_deepgram import mulaw as dg_mulaw

KEY = "dg-flux-secret-5678"
CALL = CallInfo(call_id="CA-flux-test", transport="twilio")
FIRST = "i would like to book a cleaning"
SECOND = "tuesday at ten please"


def mulaw(text: str, pause_ms: float = 900) -> bytes:
    return dg_mulaw(text, pause_ms)


def is_end(ev: SttEvent) -> bool:
    return isinstance(ev, Transcript) and ev.is_final


@pytest.fixture
async def fake():
    async with FluxFake(api_key=KEY) as server:
        yield server


def flux(fake: FluxFake, **opts) -> FluxStt:
    return FluxStt(KEY, fake.ws_url, FluxOptions(**opts))


def info(event: str, transcript: str = "", end: float = 1.0, index: int = 0) -> ListenV2TurnInfo:
    words = [{"word": w, "confidence": 0.9} for w in transcript.split()]
    return ListenV2TurnInfo(
        request_id="r", sequence_id=1, event=event, turn_index=index, audio_window_start=0.0,
        audio_window_end=end, transcript=transcript, words=words, end_of_turn_confidence=0.5,
    )  # fmt: skip


# --------------------------------------------------------------------------- pure parts


def test_turn_messages_map_to_core_events():
    turns = FluxTurns(idle_keep_s=1.0)
    assert turns.feed(info("Update", end=3.0)) == ([], 2.0)  # silence: settled but the tail
    started = [SpeechStarted(), Transcript("i", False, False, 0.9)]
    assert turns.feed(info("StartOfTurn", "i")) == (started, None)
    assert turns.feed(info("Update", "i")) == ([], None)  # same words again: nothing new
    # an eager end starts a speculative reply; TurnResumed takes it back as new speech
    assert turns.feed(info("EagerEndOfTurn", "i would")) == (
        [Transcript("i would", False, False, 0.9), ProbableEnd("i would")], None,
    )  # fmt: skip
    assert turns.feed(info("TurnResumed", "i would like"))[0] == [
        Transcript("i would like", False, False, 0.9), SpeechStarted()
    ]  # fmt: skip
    events, settled = turns.feed(info("EndOfTurn", "i would like", end=4.25))
    assert events == [Transcript("i would like", True, True, 0.9)] and settled == 4.25
    assert not turns.in_turn and turns.turns == 1


def test_a_turn_replayed_after_a_drop_is_not_new_speech():
    turns = FluxTurns()
    turns.feed(info("StartOfTurn", "hello"))
    turns.socket_restarted()  # the new socket hears the turn from its start again
    events, _ = turns.feed(info("StartOfTurn", "hello"))
    assert events == [] and turns.in_turn  # "hello" was already passed on
    turns.feed(info("EndOfTurn", "hello there"))
    turns.socket_restarted()  # between turns: the next StartOfTurn is new speech
    assert turns.feed(info("StartOfTurn"))[0] == [SpeechStarted()]


def test_silence_fill_is_mulaw_zero_and_bounded():
    assert fill_silence(0.5, 10) == b"\xff" * 4000
    assert len(fill_silence(60, 2)) == 16000


def test_fake_ends_turns_on_silence_measured_in_audio_time():
    q = FluxQuery("flux-general-en", "mulaw", 8000, eot_threshold=0.7, eager_eot_threshold=0.4)
    engine = FluxEngine(q, confident_after_ms=600)
    out = engine.feed(mulaw(FIRST, pause_ms=1000))
    kinds = [e.event for e in out]
    assert kinds[0] == "StartOfTurn" and "Update" in kinds
    # word gaps (80 ms) never reach the eager threshold; the pause after the last word does
    assert kinds.count("EndOfTurn") == 1 and "TurnResumed" not in kinds
    at = kinds.index("EndOfTurn")
    assert kinds[at - 1] == "EagerEndOfTurn" and set(kinds[at + 1 :]) == {"Update"}
    assert all(not e.audio for e in out[at + 1 :])  # between turns: no words to report
    end = out[at]
    assert tonecode.decode(end.audio) == FIRST and end.trigger == "model"
    speech_s = len(tonecode.encode(FIRST)) / 2 / 8000
    # 0.7 of 600 ms of silence after the last tone (the clip ends with a word gap's pause)
    assert end.end == pytest.approx(speech_s - tonecode.WORD_GAP_MS / 1000 + 0.42, abs=0.03)
    assert engine.turn_index == 1 and not engine.in_turn


# --------------------------------------------------------------------------- real sockets


async def test_two_turns_map_start_interims_and_end(fake):
    stream = await flux(fake).open(CALL)
    try:
        await feed(stream, mulaw(FIRST) + mulaw(SECOND))
        events = await collect(stream, lambda e: is_end(e) and SECOND in e.text)
    finally:
        await stream.aclose()
    q = {k: v[0] for k, v in fake.queries[0].items()}
    assert q == {
        "model": "flux-general-en", "encoding": "mulaw", "sample_rate": "8000",
        "eot_threshold": "0.7", "eot_timeout_ms": "5000",
    }  # fmt: skip
    ends = [i for i, e in enumerate(events) if is_end(e)]
    assert [events[i].text for i in ends] == [FIRST, SECOND]
    assert all(events[i].speech_final for i in ends)
    for start, stop, words in ((0, ends[0], FIRST), (ends[0] + 1, ends[1], SECOND)):
        turn = events[start:stop]
        assert isinstance(turn[0], SpeechStarted)
        assert sum(isinstance(e, SpeechStarted) for e in turn) == 1
        interims = [e.text for e in turn if isinstance(e, Transcript)]
        assert interims and all(not e.is_final for e in turn if isinstance(e, Transcript))
        assert all(words.startswith(t) for t in interims) and len(set(interims)) == len(interims)
    # phone audio went through as it came (no transcoding), and is counted for billing
    assert fake.audio_bytes[0] >= len(mulaw(FIRST) + mulaw(SECOND))
    assert stream.audio_seconds * 8000 == pytest.approx(fake.audio_bytes[0], abs=1)
    assert FluxStt.end_of_turn_model is True


async def test_socket_dropped_mid_turn_still_yields_the_whole_turn(fake):
    fake.drop_after_speech_ms = 1200  # FIRST lasts ~2.4 s: the drop comes mid-word
    stream = await flux(fake).open(CALL)
    try:
        await feed(stream, mulaw("hello"))
        await collect(stream, is_end)  # a finished turn: its audio is settled
        await feed(stream, mulaw(FIRST))
        events = await collect(stream, is_end)
    finally:
        await stream.aclose()
    assert fake.connections == 2 and stream.reconnects == 1
    assert [e.text for e in events if is_end(e)] == [FIRST]
    assert sum(isinstance(e, SpeechStarted) for e in events) == 1  # the replay is not new speech
    # the replay held the turn in progress, not the settled "hello" turn before it
    hello = len(mulaw("hello"))
    assert len(mulaw(FIRST)) // 3 < stream.replayed_bytes < len(mulaw(FIRST)) + hello // 2


async def test_a_fatal_error_message_reconnects_and_keeps_the_words(fake):
    fake.fatal_error_after_ms = 1500
    stream = await flux(fake).open(CALL)
    try:
        await feed(stream, mulaw(FIRST))
        events = await collect(stream, is_end)
    finally:
        await stream.aclose()
    assert [e.text for e in events if is_end(e)] == [FIRST] and stream.reconnects == 1


async def test_a_turn_ends_when_the_callers_audio_stops_coming(fake):
    stream = await flux(fake, silence_fill_s=0.2).open(CALL)
    try:
        await feed(stream, pcm16_to_mulaw(tonecode.encode("hello there")))  # no pause after
        events = await collect(stream, is_end, within=3)
    finally:
        await stream.aclose()
    assert [e.text for e in events if is_end(e)] == ["hello there"]
    assert stream.filled_bytes >= 0.2 * 8000


async def test_bad_key_fails_fast_and_clearly(fake):
    started = time.monotonic()
    with pytest.raises(DeepgramError, match="401"):
        await FluxStt("wrong-key", fake.ws_url).open(CALL)
    assert time.monotonic() - started < 1.0


async def test_parameters_the_service_refuses_fail_fast(fake):
    started = time.monotonic()
    with pytest.raises(DeepgramError, match="400"):
        await flux(fake, model="nova-3").open(CALL)
    assert time.monotonic() - started < 1.0


async def test_gives_up_with_fatal_failure_when_service_stays_down(fake):
    stream = await flux(fake, reconnect_budget_s=0.5).open(CALL)
    fake.reject_connects = 1000
    fake.drop_after_ms = 100
    try:
        started = time.monotonic()
        await feed(stream, mulaw("anyone there"))
        events = await collect(stream, lambda e: isinstance(e, SttFailure), within=3)
    finally:
        await stream.aclose()
    assert isinstance(events[-1], SttFailure) and events[-1].fatal
    assert time.monotonic() - started < 1.5


async def test_no_key_or_transcript_in_logs(fake, caplog):
    caplog.set_level(logging.DEBUG)
    fake.drop_after_speech_ms = 800
    stream = await flux(fake).open(CALL)
    try:
        await feed(stream, mulaw(FIRST))
        await collect(stream, is_end)
    finally:
        await stream.aclose()
    lines = [JsonFormatter().format(r) for r in caplog.records]
    assert any("stt_reconnected" in line for line in lines)
    assert any("stt_closed" in line and '"turns": 1' in line for line in lines)
    for line in lines:
        assert KEY not in line and "cleaning" not in line


# --------------------------------------------------------------------------- settings


def test_settings_select_flux_with_its_end_of_turn_parameters(fake):
    env = {
        "STT_PROVIDER": "flux", "DEEPGRAM_API_KEY": KEY, "DEEPGRAM_URL": fake.ws_url,
        "DEEPGRAM_EOT_THRESHOLD": "0.8", "DEEPGRAM_EAGER_EOT_THRESHOLD": "0.5",
        "DEEPGRAM_EOT_TIMEOUT_MS": "3000",
    }  # fmt: skip
    stt = build_one("stt", Settings.from_env(env))
    assert isinstance(stt, FluxStt) and stt.name == "flux"
    assert stt.options == FluxOptions(
        eot_threshold=0.8, eager_eot_threshold=0.5, eot_timeout_ms=3000
    )
    # a key alone still means listen.v1: Flux is chosen by name only
    assert choose("stt", Settings.from_env({"DEEPGRAM_API_KEY": KEY})) == "deepgram"
    with pytest.raises(ConfigError, match="DEEPGRAM_API_KEY"):
        build_one("stt", Settings.from_env({"STT_PROVIDER": "flux"}))
    with pytest.raises(ConfigError, match="DEEPGRAM_EAGER_EOT_THRESHOLD"):
        Settings.from_env({"DEEPGRAM_EOT_THRESHOLD": "0.6", "DEEPGRAM_EAGER_EOT_THRESHOLD": "0.7"})
    with pytest.raises(ConfigError, match="DEEPGRAM_EOT_THRESHOLD"):
        Settings.from_env({"DEEPGRAM_EOT_THRESHOLD": "0.2"})


async def test_flux_options_reach_the_socket(fake):
    opts = {"eot_threshold": 0.8, "eager_eot_threshold": 0.4, "eot_timeout_ms": 3000}
    stream = await flux(fake, **opts).open(CALL)
    await stream.aclose()
    q = {k: v[0] for k, v in fake.queries[0].items()}
    assert (q["eot_threshold"], q["eager_eot_threshold"], q["eot_timeout_ms"]) == (
        "0.8", "0.4", "3000",
    )  # fmt: skip


async def test_doctor_opens_a_flux_socket_when_flux_is_selected(fake):
    env = {"STT_PROVIDER": "flux", "DEEPGRAM_API_KEY": KEY, "DEEPGRAM_URL": fake.ws_url}
    got = {c.what: (c.ok, c.detail) for c in await diagnose(Settings.from_env(env))}
    assert got["stt"] == (True, "flux (STT_PROVIDER=flux)")
    ok, detail = got["stt flux (flux-general-en)"]
    assert ok and "socket opened" in detail
    assert fake.queries and fake.queries[-1]["model"] == ["flux-general-en"]
    bad = await diagnose(Settings.from_env({**env, "DEEPGRAM_FLUX_MODEL": "flux-nope"}))
    line = {c.what: c for c in bad}["stt flux (flux-nope)"]
    assert not line.ok and "HTTP 400" in line.detail and KEY not in line.line()
