"""Calls whose session died with its process: each instance touches the rows of its live calls
(a heartbeat), and a row nobody has touched for a while is ended with a reason."""

from __future__ import annotations

import sqlalchemy as sa

from app.store.calls import end_call
from app.store.db import Database
from app.store.schema import calls


async def touch_live(db: Database, live_ids: list[str], now: float) -> int:
    """The heartbeat of this instance's live calls: their rows are not abandoned."""
    if not live_ids:
        return 0
    async with db.tx() as conn:
        result = await conn.execute(
            sa.update(calls)
            .where(calls.c.id.in_(live_ids), calls.c.end_reason.is_(None))
            .values(updated_at=now)
        )
    return result.rowcount or 0


async def close_abandoned(
    db: Database, live_ids: set[str], now: float, stale_after_s: float, reason: str
) -> list[str]:
    """End rows no instance has touched for ``stale_after_s`` (their session died with its
    process) with ``reason``; returns their ids."""
    c = calls.c
    async with db.tx() as conn:
        rows = (
            await conn.execute(
                sa.select(c.id).where(
                    c.started_at.is_not(None),
                    c.end_reason.is_(None),
                    c.updated_at < now - stale_after_s,
                )
            )
        ).scalars().all()
        closed = [r for r in rows if r not in live_ids]
        for call_id in closed:
            await end_call(conn, call_id=call_id, reason=reason, outcome=None, now=now)
    return closed
