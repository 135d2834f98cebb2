"""What the workers of every instance share through the database: call slots (admission),
leases (one owner of a job) and spent web-call tokens.

Each function is one short transaction. Reserving a slot is serialised per instance (an
advisory lock on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises every writer), so two
workers answering at once cannot both take the last slot.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import sqlalchemy as sa

from app.store.db import Database
from app.store.schema import call_slots, leases, spent_tokens


def _lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) - 2**31  # a signed 32-bit key for pg_advisory_xact_lock


async def reserve_slot(
    db: Database, call_id: str, *, instance: str, capacity: int, now: float, ttl_s: float
) -> bool:
    """Take one of ``instance``'s ``capacity`` slots for ``call_id`` until ``now + ttl_s`` (its
    stream starts by then and holds it). True if taken, or if the call already had one."""
    s = call_slots.c
    async with db.tx() as conn:
        if not db.is_sqlite:
            await conn.execute(
                sa.select(sa.func.pg_advisory_xact_lock(_lock_key(f"slots:{instance}")))
            )
        await conn.execute(sa.delete(call_slots).where(s.expires_at < now))
        if (await conn.execute(sa.select(s.call_id).where(s.call_id == call_id))).first():
            return True  # Twilio retried the same webhook
        used = (
            await conn.execute(
                sa.select(sa.func.count()).select_from(call_slots).where(s.instance == instance)
            )
        ).scalar_one()
        if used >= capacity:
            return False
        await conn.execute(
            call_slots.insert().values(call_id=call_id, instance=instance, expires_at=now + ttl_s)
        )
    return True


async def hold_slots(
    db: Database, call_ids: Iterable[str], *, instance: str, holder: str, expires_at: float
) -> None:
    """The calls this worker runs hold their slots until ``expires_at`` (the heartbeat). A call
    whose stream reached another instance than the one that answered moves its slot there."""
    ids = list(call_ids)
    if not ids:
        return
    async with db.tx() as conn:
        stmt = db.insert(call_slots).values(
            [dict(call_id=i, instance=instance, holder=holder, expires_at=expires_at) for i in ids]
        )
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[call_slots.c.call_id],
                set_=dict(instance=instance, holder=holder, expires_at=expires_at),
            )
        )


async def free_slot(db: Database, call_id: str) -> None:
    async with db.tx() as conn:
        await conn.execute(sa.delete(call_slots).where(call_slots.c.call_id == call_id))


async def slots_in_use(db: Database, instance: str, now: float) -> int:
    s = call_slots.c
    async with db.read() as conn:
        return int(
            (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(call_slots)
                    .where(s.instance == instance, s.expires_at >= now)
                )
            ).scalar_one()
        )


async def acquire_lease(db: Database, name: str, *, holder: str, now: float, ttl_s: float) -> bool:
    """Hold ``name`` until ``now + ttl_s``: taken when free or expired, renewed when ours."""
    c = leases.c
    async with db.tx() as conn:
        updated = await conn.execute(
            sa.update(leases)
            .where(c.name == name, sa.or_(c.holder == holder, c.expires_at < now))
            .values(holder=holder, expires_at=now + ttl_s)
        )
        if updated.rowcount:
            return True
        inserted = await conn.execute(
            db.insert(leases)
            .values(name=name, holder=holder, expires_at=now + ttl_s)
            .on_conflict_do_nothing(index_elements=[c.name])
        )
        return bool(inserted.rowcount)


async def release_lease(db: Database, name: str, *, holder: str) -> None:
    """Let another worker take ``name`` at once (a clean shutdown)."""
    c = leases.c
    async with db.tx() as conn:
        await conn.execute(sa.delete(leases).where(c.name == name, c.holder == holder))


async def spend_token(db: Database, sid: str, *, expires_at: float, now: float) -> bool:
    """Record a web-call session token as spent. False if any worker spent it already."""
    c = spent_tokens.c
    async with db.tx() as conn:
        await conn.execute(sa.delete(spent_tokens).where(c.expires_at < now))
        inserted = await conn.execute(
            db.insert(spent_tokens)
            .values(sid=sid, expires_at=expires_at)
            .on_conflict_do_nothing(index_elements=[c.sid])
        )
    return bool(inserted.rowcount)
