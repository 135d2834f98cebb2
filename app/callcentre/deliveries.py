"""Delivery state of post-call webhooks, so that no call is delivered twice.

One row per call (the call id is the key: a second job for the same call is a no-op). A sender
claims a due row atomically before posting, so two instances never post the same call at once;
a claim left behind by a crash is taken over after ``STALE_CLAIM_S`` (the receiver then sees
the same ``Idempotency-Key`` again). Kept in the call-record database when there is one, so
pending deliveries survive a restart; in memory otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa

STALE_CLAIM_S = 300.0
metadata = sa.MetaData()
post_call_webhooks = sa.Table(
    "post_call_webhooks",
    metadata,
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("payload", sa.JSON, nullable=False),
    # pending -> sending -> delivered | pending (retry) | failed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Double, nullable=False),
    sa.Column("claimed_at", sa.Double),
    sa.Column("delivered_at", sa.Double),
    sa.Column("last_error", sa.String(200)),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_post_call_due", "status", "next_attempt_at"),
)


@dataclass(frozen=True, slots=True)
class Delivery:
    call_id: str
    payload: dict[str, Any]
    attempts: int  # including the one just claimed


class Deliveries(Protocol):
    async def add(self, call_id: str, payload: dict[str, Any], now: float) -> bool: ...
    async def due(self, now: float, limit: int = 20) -> list[str]: ...
    async def claim(self, call_id: str, now: float) -> Delivery | None: ...
    async def delivered(self, call_id: str, now: float) -> None: ...
    async def retry(self, call_id: str, at: float, error: str) -> None: ...
    async def failed(self, call_id: str, error: str) -> None: ...
    async def next_due(self) -> float | None: ...
    async def status(self, call_id: str) -> str | None: ...


class DbDeliveries:
    def __init__(self, db: Any) -> None:
        self.db = db
        self._created = False

    async def _ready(self) -> None:
        if not self._created:
            async with self.db.engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
            self._created = True

    async def add(self, call_id: str, payload: dict[str, Any], now: float) -> bool:
        await self._ready()
        t = post_call_webhooks
        stmt = self.db.insert(t).values(
            call_id=call_id, payload=payload, status="pending", attempts=0,
            next_attempt_at=now, created_at=now,
        ).on_conflict_do_nothing(index_elements=[t.c.call_id])  # fmt: skip
        async with self.db.tx() as conn:
            return bool((await conn.execute(stmt)).rowcount)

    async def due(self, now: float, limit: int = 20) -> list[str]:
        await self._ready()
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
        await self._ready()
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
        await self._ready()
        t = post_call_webhooks
        query = sa.select(sa.func.min(t.c.next_attempt_at)).where(t.c.status == "pending")
        async with self.db.engine.connect() as conn:
            return (await conn.execute(query)).scalar()

    async def status(self, call_id: str) -> str | None:
        await self._ready()
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


class MemoryDeliveries:
    """The same contract for a server without a database: once per process."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    async def add(self, call_id: str, payload: dict[str, Any], now: float) -> bool:
        if call_id in self.rows:
            return False
        self.rows[call_id] = {"payload": payload, "status": "pending", "attempts": 0,
                              "next": now, "claimed": None}  # fmt: skip
        return True

    def _is_due(self, row: dict[str, Any], now: float) -> bool:
        if row["status"] == "pending":
            return bool(row["next"] <= now)
        return row["status"] == "sending" and row["claimed"] < now - STALE_CLAIM_S

    async def due(self, now: float, limit: int = 20) -> list[str]:
        ids = [cid for cid, row in self.rows.items() if self._is_due(row, now)]
        return sorted(ids, key=lambda cid: self.rows[cid]["next"])[:limit]

    async def claim(self, call_id: str, now: float) -> Delivery | None:
        row = self.rows.get(call_id)
        if row is None or not self._is_due(row, now):
            return None
        row.update(status="sending", claimed=now, attempts=row["attempts"] + 1)
        return Delivery(call_id, row["payload"], row["attempts"])

    async def delivered(self, call_id: str, now: float) -> None:
        self.rows[call_id]["status"] = "delivered"

    async def retry(self, call_id: str, at: float, error: str) -> None:
        self.rows[call_id].update(status="pending", next=at)

    async def failed(self, call_id: str, error: str) -> None:
        self.rows[call_id]["status"] = "failed"

    async def next_due(self) -> float | None:
        times = [r["next"] for r in self.rows.values() if r["status"] == "pending"]
        return min(times) if times else None

    async def status(self, call_id: str) -> str | None:
        row = self.rows.get(call_id)
        return None if row is None else str(row["status"])
