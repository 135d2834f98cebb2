"""The storage layer: call records and campaigns, SQLite by default, PostgreSQL by URL.

``Store`` bundles the pieces; ``start(ctx)``/``stop(ctx)`` open it with the server and put it in
``ctx.store`` with the call-record observer in ``ctx.call_records``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.store.calls import CallStore, OutboundContext, set_call_outcome
from app.store.campaigns import CampaignStore, set_contact_outcome
from app.store.db import DEFAULT_SQLITE_PATH, Database, StoreError
from app.store.observer import CallRecordObserver

__all__ = [
    "CallRecordObserver",
    "OutboundContext",
    "Store",
    "StoreError",
    "start",
    "stop",
]


if TYPE_CHECKING:
    from app.runtime.context import AppContext


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.calls = CallStore(db)
        self.campaigns = CampaignStore(db)

    @classmethod
    async def open(
        cls, database_url: str | None, *, sqlite_path: Path = DEFAULT_SQLITE_PATH
    ) -> Store:
        db = Database(database_url, sqlite_path=sqlite_path)
        try:
            await db.create()
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def record_outcome(
        self, call_id: str, outcome: str, summary: str | None, now: float
    ) -> dict[str, Any] | None:
        """Put an outcome (and summary) on the call and its campaign contact, in one
        transaction; the call's direction and number, or None for an unknown call."""
        async with self.db.tx() as conn:
            row = await set_call_outcome(conn, call_id, outcome, summary, now)
            if row is not None and row["contact_id"] is not None:
                await set_contact_outcome(
                    conn, contact_id=row["contact_id"], outcome=outcome, now=now
                )
        return row

    async def call_context(self, call_sid: str) -> OutboundContext | None:
        """For the answer webhook: prompt variables of an outbound call we placed, or None."""
        return await self.calls.call_context(call_sid)

    async def close(self) -> None:
        await self.db.close()


async def start(ctx: AppContext) -> Store:
    """Open the store and register the call-record observer on the app context."""
    store = await Store.open(ctx.settings.store.database_url)
    observer = CallRecordObserver(store.db)
    observer.start()
    ctx.observers.append(observer)
    ctx.store = store
    ctx.call_records = observer
    return store


async def stop(ctx: AppContext) -> None:
    observer, ctx.call_records = ctx.call_records, None
    if observer is not None:
        await observer.aclose()
        if observer in ctx.observers:
            ctx.observers.remove(observer)
    store, ctx.store = ctx.store, None
    if store is not None:
        await store.close()
