"""Zombie sweep on a real SQLite store: only abandoned sessions are closed as interrupted."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.config import OpsSettings, Settings
from app.core.providers import CallInfo
from app.core.records import CallEvent, TranscriptLine
from app.ops import zombies
from app.runtime.context import CallRegistry
from app.store import CallRecordObserver
from app.store import calls as call_rows
from tests.ops.records import finished_call, open_store

T0 = 1_000_000.0


async def started(store, call: CallInfo, at: float) -> None:
    observer = CallRecordObserver(store.db, clock=lambda: at)
    observer.start()
    observer.record(call, CallEvent("call_started", 1.0))
    observer.record(call, TranscriptLine("caller", "hello?", 2.0))
    assert await observer.flush()
    await observer.aclose()


class Ctx:
    def __init__(self, store) -> None:
        self.settings = Settings(ops=OpsSettings(zombie_sweep_interval_s=60))
        self.calls = CallRegistry(max_calls=4)
        self.store = store
        self.zombie_sweeper = None
        self.admission = None


async def test_only_abandoned_sessions_are_closed(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        crashed = CallInfo("CA" + "1" * 32, "twilio")
        web_crashed = CallInfo("web-crashed", "webrtc")
        live_here = CallInfo("CA" + "2" * 32, "twilio")
        fresh = CallInfo("CA" + "3" * 32, "twilio")
        for call in (crashed, web_crashed, live_here):
            await started(store, call, T0)
        await started(store, fresh, T0 + 500)  # another instance touched it recently
        async with store.db.tx() as conn:  # an outbound call still ringing: no session yet
            await call_rows.record_outbound(
                conn, store.db, call_sid="CA" + "4" * 32, now=T0, to_number="+14155550100",
                from_number="+14155550101", variables=None, prompt=None)
        done_call, done_records = finished_call(9)
        observer = CallRecordObserver(store.db, clock=lambda: T0)
        observer.start()
        for record in done_records:
            observer.record(done_call, record)
        assert await observer.flush()
        await observer.aclose()

        ctx = Ctx(store)
        ctx.calls.add(live_here, object())
        sweeper = zombies.ZombieSweeper(ctx, interval_s=60, clock=lambda: T0 + 600)
        closed = await sweeper.tick()

        assert sorted(closed) == sorted([crashed.call_id, web_crashed.call_id])
        rows = {r["id"]: r for r in await store.calls.list_calls(limit=50)}
        assert rows[crashed.call_id]["end_reason"] == "interrupted"
        assert rows[web_crashed.call_id]["end_reason"] == "interrupted"
        assert rows[web_crashed.call_id]["status"] == "completed"  # a web call has no callbacks
        assert rows[live_here.call_id]["end_reason"] is None
        assert rows[live_here.call_id]["updated_at"] == T0 + 600  # heartbeat
        assert rows[fresh.call_id]["end_reason"] is None
        assert rows["CA" + "4" * 32]["end_reason"] is None
        assert rows[done_call.call_id]["end_reason"] == "agent ended"

        # the closed calls keep what was recorded before the crash
        detail = await store.calls.get_call(crashed.call_id)
        assert [line["text"] for line in detail["transcript"]] == ["hello?"]
        assert await sweeper.tick() == []  # nothing twice
    finally:
        await store.close()


async def test_the_periodic_task_waits_for_the_store_and_stops_cleanly(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        crashed = CallInfo("web-x", "webrtc")
        await started(store, crashed, 10.0)  # long ago
        ctx = Ctx(None)
        ctx.store = None
        ctx.settings = Settings(ops=OpsSettings(zombie_sweep_interval_s=1))
        sweeper = await zombies.start(ctx)
        ctx.store = store  # the store opens after the sweeper started
        for _ in range(100):
            if sweeper.closed_total:
                break
            await asyncio.sleep(0.05)
        assert sweeper.closed_total == 1
        await zombies.stop(ctx)
        assert ctx.zombie_sweeper is None
    finally:
        await store.close()
