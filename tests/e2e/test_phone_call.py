"""Whole phone calls through the real Twilio Media Streams protocol, on the local providers.

The simulator plays Twilio (signed webhook, TwiML, paced µ-law media, mark echoes, clear); the
server runs faster-whisper, the scripted receptionist and eSpeak NG. Real time, real sockets.
"""

from __future__ import annotations

import asyncio
import re
import secrets

import pytest

from app.core.records import CallEnded, CallEvent, TranscriptLine, TurnMetrics
from app.simulator import CallerLine, CallOptions, simulate_call

pytestmark = pytest.mark.slow

BOOKING = (
    "I'd like to book an appointment tomorrow at ten o'clock.",
    "My name is Alex Morgan.",
    "Yes, that's right.",
    "No, that's everything. Thank you, goodbye.",
)


def lines_of(srv, call_sid: str, role: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.text for r in srv.recorder.of(call_sid, TranscriptLine) if r.role == role]


async def test_four_turn_booking_is_understood_and_ends_cleanly(local_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with local_server() as srv:
        result = await simulate_call(
            srv.url, BOOKING, CallOptions(wav_out=tmp_path / "call.wav", call_timeout=120)
        )
    assert result.connected and not result.violations, result.violations
    assert result.hangup == "agent"  # the agent said goodbye and ended the call
    assert result.after_streams == ["hangup"]  # and its <Connect action> does not revive it
    assert [t.timed_out for t in result.turns] == [False] * 5
    caller = lines_of(srv, result.call_sid, "caller")
    agent = " ".join(lines_of(srv, result.call_sid, "agent"))
    assert len(caller) == 4
    # what the agent said shows it understood the day and the time
    assert re.search(r"tomorrow at (10|ten)", agent, re.I), (caller, agent)
    assert "booked" in agent
    assert "Alex" in agent
    ended = srv.recorder.of(result.call_sid, CallEnded)
    assert ended and ended[0].reason == "end_call"
    metrics = srv.recorder.of(result.call_sid, TurnMetrics)
    assert len(metrics) >= 3 and all(m.stages_ms()["total"] for m in metrics)
    assert (tmp_path / "call.wav").stat().st_size > 8000 * 2 * 2 * 10  # >10 s stereo


async def test_barge_in_clears_the_agent_and_trims_its_history(local_server) -> None:  # type: ignore[no-untyped-def]
    lines = (
        "What are your opening hours?",
        # spoken 700 ms into the agent's answer, long enough to be an interruption
        CallerLine(text="Sorry, actually I want to cancel my appointment.", barge_in_ms=700),
        "Thank you, goodbye.",
    )
    async with local_server() as srv:
        result = await simulate_call(srv.url, lines, CallOptions(call_timeout=120))
        runner_events = srv.recorder.of(result.call_sid, CallEvent)
    assert not result.violations, result.violations
    barged = result.turns[2]
    assert barged.barge_in and barged.clear_at is not None
    assert barged.barge_in_ms is not None and barged.barge_in_ms < 1000
    assert any(m.cleared for m in result.marks)  # Twilio's echo of a cleared mark
    assert [e for e in runner_events if e.kind == "barge_in"]
    lines = srv.recorder.of(result.call_sid, TranscriptLine)
    heard = [r for r in lines if r.role == "agent" and r.interrupted]
    assert heard, "the interrupted reply is recorded with the part that was heard"
    assert all(len(h.text) < 120 for h in heard)


async def test_twenty_calls_at_once_all_complete(local_server) -> None:  # type: ignore[no-untyped-def]
    # One Whisper worker serves every call, so 20 callers speaking within seconds of each other
    # queue up (~0.5 s of CPU each on 2 cores): replies are slower, but no call is lost. Each
    # caller hears "one moment" a second after they stop, and waits for the answer after it.
    async with local_server(IDLE_TIMEOUT_S="90") as srv:

        async def one(i: int):  # type: ignore[no-untyped-def]
            await asyncio.sleep(0.25 * i)  # calls arrive over 5 s, as they would
            return await simulate_call(
                srv.url,
                ("What are your opening hours?",),
                CallOptions(call_timeout=150, reply_timeout=90, settle_ms=15_000),
            )

        results = await asyncio.gather(*(one(i) for i in range(20)))
        assert await srv.ctx.calls.wait_empty(15)
    assert all(r.connected and r.error is None for r in results), [r.error for r in results]
    assert not [v for r in results for v in r.violations]
    assert len({r.call_sid for r in results}) == 20
    for r in results:
        assert not any(t.timed_out for t in r.turns)
        agent = " ".join(lines_of(srv, r.call_sid, "agent"))
        assert re.search(r"8 am to 6 pm", agent), agent
        assert srv.recorder.of(r.call_sid, CallEnded)[0].reason == "caller hung up"


async def test_a_stream_dropped_mid_call_goes_on_over_a_new_one(local_server) -> None:  # type: ignore[no-untyped-def]
    """The server's side of the stream breaks after the first answer (as when the process that
    held it dies): Twilio's <Connect action> request gets a new stream, the agent says its
    recovery line and the booking is finished with what was said before."""
    sid = "CA" + secrets.token_hex(16)  # CallSids are unique: the store outlives a test
    async with local_server() as srv:

        async def drop_after_first_answer() -> None:
            while True:
                runner = srv.ctx.calls.get(sid)
                if runner is not None and sum(
                    1 for line in runner.transcript if line.role == "agent"
                ) >= 2:
                    wire = getattr(runner.sink, "_inner", runner.sink)  # under the agent's sink
                    await wire.close(1011, "dropped by the test")
                    return
                await asyncio.sleep(0.05)

        dropper = asyncio.create_task(drop_after_first_answer())
        try:
            result = await simulate_call(
                srv.url, BOOKING, CallOptions(call_sid=sid, call_timeout=150)
            )
        finally:
            if not dropper.done():
                dropper.cancel()
        assert dropper.done() and not dropper.cancelled() and dropper.exception() is None
        await srv.ctx.call_records.flush(wait_s=5.0)
        record = await srv.ctx.store.calls.get_call(sid)
    assert result.after_streams == ["stream", "hangup"], result.after_streams
    agent = [line["text"] for line in record["transcript"] if line["role"] == "agent"]
    assert srv.ctx.settings.agent.script().recovery in agent
    assert agent.count(srv.ctx.settings.agent.greeting) == 1  # never greeted twice
    assert "booked" in " ".join(agent) and "Alex" in " ".join(agent), agent
    caller = [line["text"] for line in record["transcript"] if line["role"] == "caller"]
    assert len(caller) == len(set(caller)) >= 3, caller  # no line written twice
    assert record["end_reason"] == "end_call"
