"""The do-not-call list and the global dialling pace, shared by every instance through the
database (one row per pacing key, reserved in a transaction)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from app.store.campaign_rows import _dnc_among
from app.store.db import Database
from app.store.schema import dial_pacing, do_not_call


class ListsAndPacing:
    db: Database

    # ----------------------------------------------------------------- do not call

    async def add_dnc(self, phones: Iterable[str], *, now: float, reason: str | None = None) -> int:
        rows = [{"phone": p, "reason": reason, "added_at": now} for p in set(phones)]
        if not rows:
            return 0
        # RETURNING, not rowcount: PostgreSQL's driver reports no row count for a multi-row
        # insert (it said "added 0" for new numbers), and both databases return the new rows.
        added = 0
        async with self.db.tx() as conn:
            for start in range(0, len(rows), 500):
                stmt = (
                    self.db.insert(do_not_call)
                    .values(rows[start : start + 500])
                    .on_conflict_do_nothing(index_elements=[do_not_call.c.phone])
                    .returning(do_not_call.c.phone)
                )
                added += len((await conn.execute(stmt)).all())
        return added

    async def remove_dnc(self, phone: str) -> bool:
        async with self.db.tx() as conn:
            result = await conn.execute(sa.delete(do_not_call).where(do_not_call.c.phone == phone))
        return bool(result.rowcount)

    async def is_dnc(self, phone: str) -> bool:
        async with self.db.read() as conn:
            return bool(await _dnc_among(conn, [phone]))

    # ----------------------------------------------------------------- pacing

    async def reserve_slot(self, limits: Sequence[tuple[str, float]], now: float) -> float:
        """Reserve the next dial time under every ``(key, interval_s)`` limit at once.

        All instances share these rows, so the limit holds across them: the slot is the
        earliest time allowed by every key, and each key then moves one interval past it.
        Rows are locked in key order so two reservations never deadlock.
        """
        ordered = sorted(limits)
        async with self.db.tx() as conn:
            stmt = self.db.insert(dial_pacing).on_conflict_do_nothing(
                index_elements=[dial_pacing.c.key]
            )
            await conn.execute(stmt, [{"key": k, "next_at": 0.0} for k, _ in ordered])
            rows = dict(
                (
                    await conn.execute(
                        sa.select(dial_pacing.c.key, dial_pacing.c.next_at)
                        .where(dial_pacing.c.key.in_([k for k, _ in ordered]))
                        .order_by(dial_pacing.c.key)
                        .with_for_update()
                    )
                ).all()
            )
            slot = max([now, *rows.values()])
            for key, interval in ordered:
                await conn.execute(
                    sa.update(dial_pacing)
                    .where(dial_pacing.c.key == key)
                    .values(next_at=slot + interval)
                )
        return slot

    async def hold_pacing(self, key: str, until: float) -> None:
        """Nobody dials under ``key`` before ``until`` (a 429 from Twilio backs everyone off)."""
        async with self.db.tx() as conn:
            stmt = self.db.insert(dial_pacing).values(key=key, next_at=until)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[dial_pacing.c.key],
                    set_={
                        "next_at": sa.case(
                            (dial_pacing.c.next_at > until, dial_pacing.c.next_at), else_=until
                        )
                    },
                )
            )


