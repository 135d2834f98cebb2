"""The store on both databases: call records through the observer, queries, set_outcome."""

from __future__ import annotations

import asyncio

import pytest

from app.campaigns.tools import SET_OUTCOME, apply_outcome
from app.core import records as rec
from app.core.providers import CallInfo
from app.store import CallRecordObserver, Store
from app.store import calls as call_rows
from tests.store.pg import pg_url  # noqa: F401 - fixture


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request, tmp_path):
    if request.param == "sqlite":
        url = None
    else:
        url = request.getfixturevalue("pg_url")
    s = await Store.open(url, sqlite_path=tmp_path / "records.db")
    try:
        yield s
    finally:
        await s.close()


WEB = CallInfo(call_id="web-1", transport="webrtc", from_number="+14155550111")


async def test_observer_persists_a_call_without_blocking(store):
    observer = CallRecordObserver(store.db, clock=lambda: 1000.0)
    observer.start()
    try:
        observer.open_call(WEB)
        observer.record(WEB, rec.TranscriptLine("agent", "Hello, this is Ava.", at=0.1))
        observer.record(WEB, rec.TranscriptLine("caller", "Hi, I need a cleaning.", at=1.5))
        turn = rec.TurnMetrics(turn=1, speech_end=2.0, stt_final=2.1, turn_committed=2.2,
                               llm_first_token=2.6, tts_first_audio=2.7, first_audio_sent=2.75)
        observer.record(WEB, turn)
        observer.record(WEB, rec.CallEvent("barge_in", at=3.0, detail={"heard_ms": 800}))
        observer.record(WEB, rec.TranscriptLine("agent", "Sure, Monday at", at=3.1,
                                                interrupted=True, turn=1))
        observer.record(WEB, rec.CallEnded("caller hung up", at=9.0, outcome="booked"))
        assert await observer.flush()
        call = await store.calls.get_call("web-1")
    finally:
        await observer.aclose()
    assert call is not None
    assert (call["transport"], call["status"], call["end_reason"], call["outcome"]) == (
        "webrtc", "completed", "caller hung up", "booked",
    )
    assert [(t["seq"], t["role"], t["interrupted"]) for t in call["transcript"]] == [
        (0, "agent", False), (1, "caller", False), (2, "agent", True),
    ]
    assert call["turns"][0]["total_ms"] == 750.0
    assert call["events"][0]["detail"] == {"heard_ms": 800}
    listed = await store.calls.list_calls(limit=10)
    assert [c["id"] for c in listed] == ["web-1"]


async def test_a_full_queue_drops_detail_but_never_the_call_row(store):
    observer = CallRecordObserver(store.db, max_queue=3)  # the writer is not started yet
    info = CallInfo(call_id="CA-busy", transport="twilio")
    for i in range(10):
        observer.record(info, rec.TranscriptLine("caller", f"word {i}", at=float(i)))
    observer.record(info, rec.CallEnded("agent ended", at=10.0))
    assert observer.dropped == 7
    observer.start()
    try:
        assert await observer.flush()
    finally:
        await observer.aclose()
    call = await store.calls.get_call("CA-busy")
    assert call is not None and call["end_reason"] == "agent ended"
    assert len(call["transcript"]) == 3


async def test_records_keep_flowing_while_the_writer_is_slow(store):
    observer = CallRecordObserver(store.db)
    observer.start()
    try:
        calls = [CallInfo(call_id=f"c{i}", transport="webrtc") for i in range(20)]
        for n in range(50):
            for info in calls:
                observer.record(info, rec.TranscriptLine("caller", f"line {n}", at=float(n)))
            await asyncio.sleep(0)
        assert await observer.flush(wait_s=30)
    finally:
        await observer.aclose()
    assert observer.dropped == 0
    assert len((await store.calls.get_call("c7"))["transcript"]) == 50


async def test_set_outcome_tool_updates_call_contact_and_dnc(store):
    assert SET_OUTCOME.name == "set_outcome"
    async with store.db.tx() as conn:
        await call_rows.record_outbound(
            conn, store.db, call_sid="CA-out", now=5.0, to_number="+12125550177",
            from_number="+14155550100", variables={"name": "Ann"}, prompt=None,
        )
    assert await apply_outcome(store, "CA-out", "do_not_call", "Asked to stop.", now=6.0) == (
        "Outcome recorded: do_not_call."
    )
    call = await store.calls.get_call("CA-out")
    assert (call["outcome"], call["summary"]) == ("do_not_call", "Asked to stop.")
    assert await store.campaigns.is_dnc("+12125550177")
    assert "Unknown outcome" in await apply_outcome(store, "CA-out", "Bad Outcome!")
    assert "unknown call" in await apply_outcome(store, "CA-nope", "interested")


async def test_status_is_forward_only_on_both_databases(store):
    async with store.db.tx() as conn:
        first = await call_rows.apply_status(
            conn, store.db, call_sid="CA-x", status="completed", now=1.0, seq=3, duration_s=12
        )
        late = await call_rows.apply_status(
            conn, store.db, call_sid="CA-x", status="ringing", now=2.0, seq=1
        )
    assert (first.applied, late.applied, late.status) == (True, False, "completed")
    assert late.row["duration_s"] == 12


async def test_a_phone_call_ended_by_us_has_an_end_and_a_length_without_callbacks(store):
    """No status callback (a number without a status URL, the simulator, a crash): the call is
    not left 'queued' with no end; Twilio's own final status, when it came, is kept."""
    sid, busy_sid = "CA" + "1" * 32, "CA" + "2" * 32
    async with store.db.tx() as conn:
        await call_rows.open_call(conn, store.db, call_id=sid, now=1000.0)
        await call_rows.open_call(conn, store.db, call_id=busy_sid, now=1000.0)
        await call_rows.apply_status(conn, store.db, call_sid=busy_sid, status="busy", now=1001.0)
    async with store.db.tx() as conn:
        await call_rows.end_call(conn, call_id=sid, reason="interrupted", outcome=None, now=1042.5)
        await call_rows.end_call(
            conn, call_id=busy_sid, reason="interrupted", outcome=None, now=1042.5
        )
    row = await store.calls.get_call(sid)
    assert (row["status"], row["ended_at"], row["duration_s"]) == ("completed", 1042.5, 42.5)
    assert (await store.calls.get_call(busy_sid))["status"] == "busy"


async def test_dnc_add_counts_the_new_numbers_on_either_database(store):
    added = await store.campaigns.add_dnc(["+14155550101", "+14155550102"], now=1.0)
    again = await store.campaigns.add_dnc(["+14155550102", "+14155550103"], now=2.0)
    assert (added, again) == (2, 1)
    assert await store.campaigns.is_dnc("+14155550103")
