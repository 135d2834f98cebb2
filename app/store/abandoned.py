"""Calls whose session died with its process: each instance touches the rows of its live calls
(a heartbeat), and a row nobody has touched for a while is ended with a reason. The rows
touched lately are the calls live on some worker (the dashboard's view across workers)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from app.store.calls import end_call
from app.store.db import Database
from app.store.schema import call_events, call_turns, calls


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


async def live_calls(
    db: Database, now: float, fresh_s: float, limit: int = 500
) -> list[dict[str, Any]]:
    """Calls in progress on any worker of any instance: their session started (not only
    answered), not ended, and touched by their worker's heartbeat within ``fresh_s``; with
    their turn count and last turn."""
    c, t, e = calls.c, call_turns.c, call_events.c
    running = sa.exists().where(e.call_id == c.id, e.kind == "call_started")
    turns = sa.select(sa.func.count()).where(t.call_id == c.id).scalar_subquery().label("turns")
    last = (
        sa.select(t.total_ms).where(t.call_id == c.id).order_by(t.turn.desc()).limit(1)
        .scalar_subquery().label("last_turn_ms")
    )
    query = (
        sa.select(c.id, c.transport, c.direction, c.from_number, c.to_number, turns, last)
        .where(c.end_reason.is_(None), c.updated_at >= now - fresh_s, running)
        .order_by(c.started_at)
        .limit(limit)
    )
    async with db.read() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]
