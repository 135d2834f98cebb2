"""Post-call webhook deliveries in the call-record database, so no call is delivered twice.

One row per call (the call id is the key: a second job for the same call is a no-op). A sender
claims a due row atomically before posting, so two instances never post the same call at once;
a claim left behind by a crash is taken over after ``STALE_CLAIM_S``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from app.store.schema import post_call_webhooks

STALE_CLAIM_S = 300.0  # a claim older than this belongs to a sender that died


@dataclass(frozen=True, slots=True)
class Delivery:
    call_id: str
    payload: dict[str, Any]
    attempts: int  # including the one just claimed



class DbDeliveries:
    def __init__(self, db: Any) -> None:
        self.db = db

    async def add(self, call_id: str, payload: dict[str, Any], now: float) -> bool:
        t = post_call_webhooks
        stmt = self.db.insert(t).values(
            call_id=call_id, payload=payload, status="pending", attempts=0,
            next_attempt_at=now, created_at=now,
        ).on_conflict_do_nothing(index_elements=[t.c.call_id])  # fmt: skip
        async with self.db.tx() as conn:
            return bool((await conn.execute(stmt)).rowcount)

    async def due(self, now: float, limit: int = 20) -> list[str]:
        t = post_call_webhooks
        query = (
            sa.select(t.c.call_id)
            .where(_due(now))
            .order_by(t.c.next_attempt_at)
            .limit(limit)
        )
        async with self.db.engine.connect() as conn:
            return [row.call_id for row in await conn.execute(query)]

    async def claim(self, call_id: str, now: float) -> Delivery | None:
        t = post_call_webhooks
        async with self.db.tx() as conn:
            result = await conn.execute(
                sa.update(t)
                .where(t.c.call_id == call_id, _due(now))
                .values(status="sending", claimed_at=now, attempts=t.c.attempts + 1)
            )
            if not result.rowcount:
                return None
            row = (await conn.execute(sa.select(t).where(t.c.call_id == call_id))).mappings().one()
        return Delivery(call_id, dict(row["payload"]), int(row["attempts"]))

    async def delivered(self, call_id: str, now: float) -> None:
        await self._set(call_id, status="delivered", delivered_at=now, last_error=None)

    async def retry(self, call_id: str, at: float, error: str) -> None:
        await self._set(call_id, status="pending", next_attempt_at=at, last_error=error[:200])

    async def failed(self, call_id: str, error: str) -> None:
        await self._set(call_id, status="failed", last_error=error[:200])

    async def next_due(self) -> float | None:
        t = post_call_webhooks
        query = sa.select(sa.func.min(t.c.next_attempt_at)).where(t.c.status == "pending")
        async with self.db.engine.connect() as conn:
            return (await conn.execute(query)).scalar()

    async def status(self, call_id: str) -> str | None:
        t = post_call_webhooks
        async with self.db.engine.connect() as conn:
            query = sa.select(t.c.status).where(t.c.call_id == call_id)
            return (await conn.execute(query)).scalar()

    async def _set(self, call_id: str, **values: Any) -> None:
        t = post_call_webhooks
        async with self.db.tx() as conn:
            await conn.execute(sa.update(t).where(t.c.call_id == call_id).values(**values))


def _due(now: float) -> Any:
    t = post_call_webhooks
    return sa.or_(
        sa.and_(t.c.status == "pending", t.c.next_attempt_at <= now),
        sa.and_(t.c.status == "sending", t.c.claimed_at < now - STALE_CLAIM_S),
    )
