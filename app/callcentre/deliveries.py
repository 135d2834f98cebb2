"""Delivery state of post-call webhooks, so that no call is delivered twice.

One row per call (the call id is the key: a second job for the same call is a no-op). A sender
claims a due row atomically before posting, so two instances never post the same call at once;
a claim left behind by a crash is taken over after ``STALE_CLAIM_S`` (the receiver then sees
the same ``Idempotency-Key`` again). Kept in the call-record database when there is one, so
pending deliveries survive a restart; in memory otherwise.
"""

from __future__ import annotations

from typing import Any, Protocol

from app.store.deliveries import STALE_CLAIM_S, Delivery


class Deliveries(Protocol):
    async def add(self, call_id: str, payload: dict[str, Any], now: float) -> bool: ...
    async def due(self, now: float, limit: int = 20) -> list[str]: ...
    async def claim(self, call_id: str, now: float) -> Delivery | None: ...
    async def delivered(self, call_id: str, now: float) -> None: ...
    async def retry(self, call_id: str, at: float, error: str) -> None: ...
    async def failed(self, call_id: str, error: str) -> None: ...
    async def next_due(self) -> float | None: ...
    async def status(self, call_id: str) -> str | None: ...


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
