"""Simulated calls against a small fake agent server over real loopback sockets.

The fake (``fake_agent.py``) checks signatures itself and logs what arrived when, so each test
checks the simulator from the other end of the wire, not only from its own report.
"""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from app.simulator import CallerLine, CallOptions, simulate_call
from tests.simulator.fake_agent import AUTH_TOKEN, PUBLIC_URL, FakeAgent, tone

OPTIONS = CallOptions(public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, settle_ms=300)


def caller(ms: int, hz: float = 300.0) -> CallerLine:
    return CallerLine(audio=tone(ms, hz, 0.5))


async def test_webhook_and_upgrade_are_signed_over_the_public_urls() -> None:
    agent = FakeAgent()
    async with agent.serve() as url:
        result = await simulate_call(url, [], OPTIONS)
    assert result.ok, (result.error, result.violations)
    assert agent.webhook_signature_ok == [True]
    hook = agent.webhooks[0]
    assert hook["CallSid"] == result.call_sid and hook["Direction"] == "inbound"
    assert (hook["From"], hook["To"]) == (OPTIONS.from_number, OPTIONS.to_number)
    stream = agent.streams[0]
    assert stream.signature_ok and stream.path == f"/twilio/stream/{result.call_sid}"


async def test_wrong_auth_token_is_refused_by_the_server() -> None:
    agent = FakeAgent()
    async with agent.serve() as url:
        result = await simulate_call(url, [], CallOptions(public_url=PUBLIC_URL, auth_token="x"))
    assert agent.webhook_signature_ok == [False]
    assert not result.connected and not result.ok
    assert result.error == "voice webhook answered HTTP 403"


async def test_start_stream_twiml_is_refused() -> None:
    def one_way(url: str) -> str:
        return f'<Response><Start><Stream url="{url}"/></Start><Pause length="60"/></Response>'

    agent = FakeAgent(twiml=one_way)
    async with agent.serve() as url:
        result = await simulate_call(url, ["hello"], OPTIONS)
    assert not result.connected
    assert result.error is not None and "<Start><Stream>" in result.error
    assert agent.streams == []


async def test_stream_opens_like_twilio_and_paces_frames_in_real_time() -> None:
    agent = FakeAgent(greeting=tone(1000))
    async with agent.serve() as url:
        result = await simulate_call(url, [], OPTIONS)
    stream = agent.streams[0]
    kinds = [m["event"] for _, m in stream.received]
    assert kinds[:2] == ["connected", "start"] and kinds[-1] == "stop"
    start = stream.events("start")[0]
    assert start["streamSid"] == result.stream_sid and start["start"]["callSid"] == result.call_sid
    assert start["start"]["customParameters"] == {"who": "test", "n": "1"}
    media = [(t, m) for t, m in stream.received if m["event"] == "media"]
    chunks = [int(m["media"]["chunk"]) for _, m in media]
    assert chunks == list(range(1, len(media) + 1))
    assert [m["media"]["timestamp"] for _, m in media] == [str(20 * (c - 1)) for c in chunks]
    seqs = [int(m["sequenceNumber"]) for _, m in stream.received[1:]]
    assert seqs == list(range(1, len(seqs) + 1))
    # Greeting 1 s + settle 0.3 s of continuous silence frames, 50 per second.
    span = media[-1][0] - media[0][0]
    assert 1.1 < span < 1.6
    assert abs(len(media) - (span * 50 + 1)) <= 3
    assert result.frames_sent == len(media)
    assert result.hangup == "caller"


async def test_marks_echoed_when_playback_reaches_them() -> None:
    agent = FakeAgent(greeting=tone(700), lead_mark=True)
    async with agent.serve() as url:
        result = await simulate_call(url, [], OPTIONS)
    stream = agent.streams[0]
    lead = stream.mark_echoes["lead"] - stream.marks_sent["lead"]
    greeting = stream.mark_echoes["say-0"] - stream.marks_sent["say-0"]
    assert lead < 0.05  # nothing buffered yet: at once
    assert 0.68 < greeting < 0.76  # after the 700 ms greeting has played
    assert [(m.name, m.cleared) for m in result.marks] == [("lead", False), ("say-0", False)]
    assert result.turns[0].latency_ms is not None and result.turns[0].latency_ms < 100


async def test_turns_wait_for_the_reply_to_play_out() -> None:
    agent = FakeAgent(greeting=tone(500), reply=tone(600, 880), reply_delay_ms=150)
    async with agent.serve() as url:
        result = await simulate_call(url, [caller(400), caller(300)], OPTIONS)
    assert result.ok, (result.error, result.violations)
    stream = agent.streams[0]
    assert len(stream.speech_starts) == 2
    # The caller spoke only after each agent utterance had played and a pause had passed.
    assert stream.speech_starts[0] > stream.mark_echoes["say-0"] + 0.25
    assert stream.speech_starts[1] > stream.mark_echoes["say-1"] + 0.25
    greeting, first, second = result.turns
    assert first.caller_text == "[400 ms of audio]" and not first.barge_in
    # speech end -> first reply audio = the fake's endpointing (10 quiet frames) + its delay
    for turn in (first, second):
        assert turn.latency_ms is not None and 330 < turn.latency_ms < 450
        assert turn.agent_audio_ms == 600 and not turn.interrupted and not turn.timed_out
    assert greeting.agent_audio_ms == 500
    assert result.hangup == "caller"


async def test_barge_in_gets_clear_and_truncates_the_reply(tmp_path: Path) -> None:
    agent = FakeAgent(greeting=tone(300), reply=tone(3000, 880))
    lines = [caller(300), CallerLine(audio=tone(400, 300, 0.5), barge_in_ms=500)]
    wav = tmp_path / "call.wav"
    opts = CallOptions(public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, settle_ms=300, wav_out=wav)
    async with agent.serve() as url:
        result = await simulate_call(url, lines, opts)
    assert result.ok, (result.error, result.violations)
    stream = agent.streams[0]
    assert len(stream.clears_sent) == 1
    # The pending mark came back as soon as the clear arrived, not after 3 s of audio.
    assert stream.mark_echoes["say-1"] - stream.clears_sent[0] < 0.05
    _, answered, interrupting = result.turns
    assert interrupting.barge_in and interrupting.barge_in_ms is not None
    assert interrupting.barge_in_ms < 60  # the fake clears on the first loud frame
    assert answered.interrupted
    assert 480 < answered.agent_audio_ms < 600  # heard until the caller cut in
    assert 2400 < result.dropped_ms < 2550
    assert [m.cleared for m in result.marks if m.name == "say-1"] == [True]
    assert interrupting.latency_ms is not None and not interrupting.interrupted

    # The recording: agent right channel silent after the clear, caller left during barge-in.
    assert result.wav_path == wav
    with wave.open(str(wav), "rb") as w:
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    assert interrupting.speech_onset is not None and answered.first_audio is not None

    def level(channel: int, start: float, end: float) -> float:
        piece = frames[int(start * 8000) : int(end * 8000), channel].astype(float)
        return float(np.sqrt(np.mean(piece**2)))

    onset, clear = interrupting.speech_onset, result.clears[0]
    assert level(1, answered.first_audio, answered.first_audio + 0.45) > 3000
    assert interrupting.first_audio is not None and interrupting.first_audio > clear + 0.3
    assert level(1, clear + 0.02, interrupting.first_audio) == 0.0  # nothing until the next reply
    assert level(0, onset, onset + 0.3) > 3000
    assert level(0, answered.first_audio, answered.first_audio + 0.45) == 0.0


async def test_dtmf_digits_are_sent_in_order() -> None:
    agent = FakeAgent(greeting=tone(200))
    lines = [CallerLine(dtmf="12#", expect_reply=False)]
    async with agent.serve() as url:
        result = await simulate_call(url, lines, OPTIONS)
    assert result.ok
    stream = agent.streams[0]
    assert stream.dtmf == "12#"
    assert [d["dtmf"]["track"] for d in stream.events("dtmf")] == ["inbound_track"] * 3
    assert result.turns[1].caller_text == "DTMF 12#" and not result.turns[1].timed_out


async def test_agent_hangup_ends_the_script() -> None:
    agent = FakeAgent(greeting=tone(300), hangup_after=1)
    async with agent.serve() as url:
        result = await simulate_call(url, [caller(300), caller(300), caller(300)], OPTIONS)
    assert result.ok and result.hangup == "agent"
    assert len(result.turns) == 2  # greeting and the one line answered before the hang-up
    assert agent.streams[0].events("stop") == []


async def test_no_reply_times_out_and_the_call_goes_on() -> None:
    agent = FakeAgent(greeting=b"", reply=tone(300))
    opts = CallOptions(
        public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, settle_ms=200, greeting_timeout=0.5
    )
    async with agent.serve() as url:
        result = await simulate_call(url, [caller(300)], opts)
    assert result.turns[0].timed_out and result.turns[0].latency_ms is None
    assert result.turns[1].latency_ms is not None and not result.turns[1].timed_out


async def test_protocol_violations_are_recorded() -> None:
    sid = "MZ" + "0" * 32
    junk: list[str | bytes] = [
        b"\x00\x01",
        "hello",
        json.dumps({"event": "clear", "streamSid": sid}),
        json.dumps({"event": "playAudio"}),
    ]
    agent = FakeAgent(greeting=tone(200), junk=junk)
    async with agent.serve() as url:
        result = await simulate_call(url, [], OPTIONS)
    assert result.connected and not result.ok
    kinds = [v.kind for v in result.violations]
    assert kinds == ["binary_frame", "not_json", "wrong_stream_sid", "unknown_event"]
    assert all(v.at is not None and v.at < 0.5 for v in result.violations)
    assert result.turns[0].agent_audio_ms == 200  # the valid messages still played


async def test_twenty_calls_at_once_keep_their_pace() -> None:
    agent = FakeAgent(greeting=tone(400), reply=tone(400, 880), reply_delay_ms=50)
    async with agent.serve() as url:
        results = await asyncio.gather(
            *(simulate_call(url, [caller(300)], OPTIONS) for _ in range(20))
        )
    assert all(r.ok for r in results), [(r.error, r.violations) for r in results if not r.ok]
    assert len({r.call_sid for r in results}) == 20
    assert all(len(s.speech_starts) == 1 for s in agent.streams)
    # No drift: each stream carried one frame per 20 ms of its length, whatever the load.
    for stream in agent.streams:
        times = [t for t, m in stream.received if m["event"] == "media"]
        assert abs(len(times) - ((times[-1] - times[0]) * 50 + 1)) <= 10
    # 21 peers share one event loop here (and the machine may be busy): a blocked loop would
    # show as seconds of lag, ordinary scheduling as tens of milliseconds.
    assert max(r.send_lag_max_ms for r in results) < 250


@pytest.mark.parametrize("line", [CallerLine(wav=Path("missing.wav"))])
async def test_bad_caller_audio_fails_before_dialing(line: CallerLine) -> None:
    agent = FakeAgent()
    async with agent.serve() as url:
        result = await simulate_call(url, [line], OPTIONS)
    assert not result.connected and result.error is not None and "missing.wav" in result.error
    assert agent.webhooks == []


async def test_call_timeout_hangs_up_and_keeps_what_was_measured() -> None:
    agent = FakeAgent(greeting=tone(300), reply=tone(5000, 880))
    opts = CallOptions(
        public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, settle_ms=200, call_timeout=2.5
    )
    async with agent.serve() as url:
        result = await simulate_call(url, [caller(300), caller(300)], opts)
    assert result.connected and not result.ok
    assert result.error == "call did not end within 2.5 s"
    assert result.hangup == "caller" and len(agent.streams[0].events("stop")) == 1
    assert result.turns[1].latency_ms is not None  # the reply that had started is kept
    assert 2.4 < result.duration_s < 3.5
