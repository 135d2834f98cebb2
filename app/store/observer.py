"""Persists every call's records without ever blocking the call.

``record()`` is called from the call's own task and only queues. A writer task owned by the
observer writes whatever has queued in one transaction as soon as it arrives, so a crash loses
at most the records of the last moments. Transcript lines, turns and events go through a
bounded queue (when the database is far behind they are dropped and counted); the call row and
its end are kept apart, bounded by the number of calls, and are never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from app.core import records as rec
from app.core.providers import CallInfo
from app.logs import bind_call, event, get_logger
from app.store import calls as call_rows
from app.store.db import Database

log = get_logger(__name__)

_Usage = getattr(rec, "Usage", None)  # provider usage per call, when the core emits it


@dataclasses.dataclass(slots=True)
class _Open:
    call: CallInfo
    at: float


@dataclasses.dataclass(slots=True)
class _End:
    call_id: str
    reason: str
    outcome: str | None
    at: float


@dataclasses.dataclass(slots=True)
class _Row:
    call_id: str
    kind: str  # transcript | event | turn | usage
    data: dict[str, Any]
    at: float


class CallRecordObserver:
    """A ``CallObserver`` writing to the call-record store."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float] = time.time,
        max_queue: int = 10_000,
        batch_size: int = 500,
        gather_s: float = 0.1,
    ) -> None:
        self.db = db
        self.clock = clock
        self.batch_size = batch_size
        self.gather_s = gather_s
        self.dropped = 0
        self.written = 0
        self._queue: asyncio.Queue[_Row] = asyncio.Queue(max_queue)
        self._essential: list[_Open | _End] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._known: set[str] = set()
        self._seq: dict[tuple[str, str], int] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # A transcript line (and a turn's usage) is written at once, not after the gather
        # window: it is what a call resumed elsewhere after a crash goes on from (a few rows
        # per turn: cheap).
        self._urgent = False

    # ----------------------------------------------------------------- producer side

    def open_call(self, call: CallInfo) -> None:
        """Create the call row now (the webhook calls this as soon as it admits a call)."""
        if call.call_id in self._known:
            return
        self._known.add(call.call_id)
        self._essential.append(_Open(call, self.clock()))
        self._poke()

    def continue_call(self, call_id: str, next_transcript: int, next_event: int) -> None:
        """A call goes on over a new stream (perhaps on another instance): its transcript and
        events carry on from where the store has them, with no line written twice."""
        self._seq[(call_id, "transcript")] = next_transcript - 1
        self._seq[(call_id, "event")] = next_event - 1

    def record(self, call: CallInfo, record: Any) -> None:
        self.open_call(call)
        now = self.clock()
        cid = call.call_id
        if isinstance(record, rec.CallEnded):
            self._essential.append(_End(cid, record.reason, record.outcome, now))
            self._known.discard(cid)
            for key in [k for k in self._seq if k[0] == cid]:
                del self._seq[key]
        elif isinstance(record, rec.TranscriptLine):
            self._urgent = True
            self._put(
                _Row(
                    cid,
                    "transcript",
                    {
                        "call_id": cid,
                        "seq": self._next_seq(cid, "transcript"),
                        "role": record.role,
                        "text": record.text,
                        "interrupted": record.interrupted,
                        "turn": record.turn,
                        "at": record.at,
                    },
                    now,
                )
            )
        elif isinstance(record, rec.TurnMetrics):
            # A snapshot: the session keeps stamping the same object after emitting it.
            row = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
            row["total_ms"] = record.stages_ms()["total"]
            row["call_id"] = cid
            self._put(_Row(cid, "turn", row, now))
        elif isinstance(record, rec.CallEvent):
            row = {
                "call_id": cid,
                "seq": self._next_seq(cid, "event"),
                "kind": record.kind[:64],
                "at": record.at,
                "detail": dict(record.detail),
            }
            self._put(_Row(cid, "event", row, now))
        elif _Usage is not None and isinstance(record, _Usage):
            usage = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
            self._urgent = True  # once per turn: what a resumed call's costs go on from
            self._put(_Row(cid, "usage", {k: v for k, v in usage.items() if v}, now))
        self._poke()

    def _next_seq(self, call_id: str, kind: str) -> int:
        key = (call_id, kind)
        self._seq[key] = self._seq.get(key, -1) + 1
        return self._seq[key]

    def _put(self, row: _Row) -> None:
        try:
            self._queue.put_nowait(row)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                with bind_call(row.call_id):
                    event(log, "call_record_dropped", kind=row.kind, dropped=self.dropped)

    def _poke(self) -> None:
        self._idle.clear()
        self._wake.set()

    # ----------------------------------------------------------------- writer

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._writer(), name="call-record-writer")

    async def flush(self, wait_s: float = 10.0) -> bool:
        """Wait until everything queued so far is written. True if it was."""
        if self._task is None:
            return not self._essential and self._queue.empty()
        try:
            await asyncio.wait_for(self._idle.wait(), wait_s)
        except TimeoutError:
            return False
        return True

    async def aclose(self, wait_s: float = 10.0) -> None:
        """Write what is queued (up to ``wait_s``), then stop the writer."""
        self._closing = True
        if self._task is None:
            return
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), wait_s)
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def _writer(self) -> None:
        failures = 0
        essential: list[_Open | _End] = []
        rows: list[_Row] = []
        while True:
            if not essential and not rows:
                if self._closing and not self._essential and self._queue.empty():
                    return
                if not self._essential and self._queue.empty():
                    self._idle.set()
                    self._wake.clear()
                    await self._wake.wait()
                    if not self._closing and self.gather_s > 0 and not self._urgent:
                        # Gather what other calls record meanwhile into the same transaction:
                        # one write per window instead of one per record keeps the database's
                        # cost flat as calls are added; a crash still loses only this window.
                        await asyncio.sleep(self.gather_s)
                self._urgent = False
                essential, self._essential = self._essential, []
                while len(rows) < self.batch_size and not self._queue.empty():
                    rows.append(self._queue.get_nowait())
            try:
                await self._write(essential, rows)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database must not stop the writer
                failures += 1
                event(
                    log,
                    "call_record_write_failed",
                    level=logging.ERROR,
                    error=type(exc).__name__,
                    calls=len({r.call_id for r in rows} | {_cid(e) for e in essential}),
                    attempt=failures,
                )
                if failures >= 5 and rows:  # keep the call rows, give up on the detail
                    self.dropped += len(rows)
                    rows = []
                if self._closing and failures >= 3:
                    return
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))
                continue
            failures = 0
            self.written += len(rows) + len(essential)
            essential, rows = [], []

    async def _write(self, essential: list[_Open | _End], rows: list[_Row]) -> None:
        db = self.db
        async with db.tx() as conn:
            for item in essential:
                if isinstance(item, _Open):
                    c = item.call
                    await call_rows.open_call(
                        conn,
                        db,
                        call_id=c.call_id,
                        now=item.at,
                        transport=c.transport,
                        direction=c.direction,
                        from_number=c.from_number,
                        to_number=c.to_number,
                        agent=c.agent,
                        variables=c.variables,
                    )
            lines = [r.data for r in rows if r.kind == "transcript"]
            await call_rows.add_transcript(conn, db, lines)
            await call_rows.add_events(conn, db, [r.data for r in rows if r.kind == "event"])
            for r in rows:
                if r.kind == "turn":
                    await call_rows.upsert_turn(conn, db, r.data)
                elif r.kind == "usage":
                    await call_rows.merge_usage(conn, call_id=r.call_id, usage=r.data, now=r.at)
            for item in essential:
                if isinstance(item, _End):
                    await call_rows.end_call(
                        conn, call_id=item.call_id, reason=item.reason, outcome=item.outcome,
                        now=item.at,
                    )


def _cid(item: _Open | _End) -> str:
    return item.call.call_id if isinstance(item, _Open) else item.call_id
