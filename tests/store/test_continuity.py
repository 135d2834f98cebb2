"""The store's side of a call that goes on over a new stream: purposeful ends, single-use
resume tokens counted per call, and the call so far (transcript, keypad field names, where
its record goes on). SQLite and real PostgreSQL."""

from __future__ import annotations

import pytest

from app.core import records as rec
from app.core.providers import CallInfo
from app.store import CallRecordObserver, Store, continuity
from tests.store.pg import pg_url  # noqa: F401 - fixture

SID = "CA" + "5" * 32


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request, tmp_path):
    url = (
        request.getfixturevalue("pg_url") if request.param == "postgres"
        else f"sqlite:///{tmp_path / 'c.db'}"
    )
    s = await Store.open(url)
    yield s
    await s.close()


async def test_the_call_so_far_and_its_guards(store):
    observer = CallRecordObserver(store.db)
    observer.start()
    call = CallInfo(SID, "twilio")
    observer.record(call, rec.TranscriptLine("agent", "Hello.", 1.0))
    observer.record(call, rec.TranscriptLine("caller", "My account please.", 2.0))
    observer.record(call, rec.CallEvent("keypad_field", 3.0, {"name": "account"}))
    observer.record(call, rec.CallEnded("stream closed", 4.0))
    await observer.aclose()
    db = store.db

    assert await continuity.ended_on_purpose(db, SID) is None
    assert await continuity.issue_resume(db, SID, "n1", 10.0, window_s=600, max_resumes=2)
    assert await continuity.redeem_resume(db, SID, "n1", 11.0)
    assert not await continuity.redeem_resume(db, SID, "n1", 12.0)  # single use
    assert not await continuity.redeem_resume(db, "CA" + "6" * 32, "n1", 12.0)  # bound
    assert await continuity.issue_resume(db, SID, "n2", 20.0, window_s=600, max_resumes=2)
    assert not await continuity.issue_resume(db, SID, "n3", 30.0, window_s=600, max_resumes=2)
    assert await continuity.issue_resume(db, SID, "n4", 700.0, window_s=600, max_resumes=2)

    so_far = await continuity.call_so_far(db, SID)
    assert so_far is not None
    assert [(r["role"], r["text"]) for r in so_far.transcript] == [
        ("agent", "Hello."), ("caller", "My account please.")]
    assert so_far.keypad_fields == ["account"]
    assert (so_far.next_transcript_seq, so_far.resumes) == (2, 1)
    assert so_far.next_event_seq >= 1
    row = await store.calls.get_call(SID)
    assert row["end_reason"] is None and row["status"] == "in-progress"  # live again

    await continuity.mark_ended_on_purpose(db, SID, "end_call", 40.0)
    await continuity.mark_ended_on_purpose(db, SID, "again", 41.0)  # idempotent
    assert await continuity.ended_on_purpose(db, SID) == "end_call"


async def test_with_the_database_down_the_call_is_let_go_politely() -> None:
    """Twilio's <Connect action> request while the database is unreachable: an apology and a
    hang-up (a new stream could not be restored), not an error page."""
    import socket
    import xml.etree.ElementTree as ET
    from types import SimpleNamespace

    from app.config import Settings
    from app.store.db import Database
    from app.transports.twilio_resume import Continuity
    from telephony.security import StreamTokens

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = Database(f"postgres://nobody@127.0.0.1:{port}/calls")
    ctx = SimpleNamespace(settings=Settings(), store=SimpleNamespace(db=db))
    try:
        twiml = await Continuity(ctx, StreamTokens(b"k" * 32, 60)).after_stream(
            {"CallSid": SID, "CallStatus": "in-progress"}, "https://x.test/twilio/voice",
            "wss://x.test/twilio/media",
        )
    finally:
        await db.close()
    assert [c.tag for c in ET.fromstring(twiml)] == ["Say", "Hangup"]
