"""What a call needs to go on when its stream drops: whether it was ended on purpose, the
resume tokens of its new streams (single use, bounded per call), and the conversation so far.

Shared by every instance through the database, so the instance that Twilio's ``<Connect
action>`` request reaches (any of them, behind the load balancer) decides the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from app.store.db import Database
from app.store.schema import call_ends, call_events, call_transcript, calls, stream_resumes


@dataclass(frozen=True, slots=True)
class CallSoFar:
    """A call as the store knows it when a new stream of it starts."""

    row: dict[str, Any]
    transcript: list[dict[str, Any]]  # in order: role, text, interrupted, turn
    next_transcript_seq: int
    next_event_seq: int
    resumes: int  # streams this call has been resumed on, this one included
    keypad_fields: list[str]  # names of the keypad fields collected so far (never the digits)


async def mark_ended_on_purpose(db: Database, call_id: str, reason: str, now: float) -> None:
    """Written before the stream closes, so the ``action`` request that follows finds it."""
    stmt = db.insert(call_ends).values(call_id=call_id, reason=reason[:200], at=now)
    async with db.tx() as conn:
        await conn.execute(stmt.on_conflict_do_nothing(index_elements=[call_ends.c.call_id]))


async def ended_on_purpose(db: Database, call_id: str) -> str | None:
    async with db.read() as conn:
        row = (
            await conn.execute(sa.select(call_ends.c.reason).where(call_ends.c.call_id == call_id))
        ).first()
    return row.reason if row else None


async def issue_resume(
    db: Database, call_id: str, nonce: str, now: float, *, window_s: float, max_resumes: int
) -> bool:
    """Record a resume token for ``call_id``; False when the call has had ``max_resumes`` in
    the last ``window_s`` seconds (a call that keeps dropping is let go politely)."""
    async with db.tx() as conn:
        recent = (
            await conn.execute(
                sa.select(sa.func.count()).select_from(stream_resumes).where(
                    stream_resumes.c.call_id == call_id,
                    stream_resumes.c.issued_at > now - window_s,
                )
            )
        ).scalar_one()
        if recent >= max_resumes:
            return False
        await conn.execute(
            stream_resumes.insert().values(nonce=nonce, call_id=call_id, issued_at=now)
        )
    return True


async def redeem_resume(db: Database, call_id: str, nonce: str, now: float) -> bool:
    """Use a resume token once: True the first time for its call, False when replayed."""
    async with db.tx() as conn:
        result = await conn.execute(
            sa.update(stream_resumes)
            .where(
                stream_resumes.c.nonce == nonce,
                stream_resumes.c.call_id == call_id,
                stream_resumes.c.used_at.is_(None),
            )
            .values(used_at=now)
        )
    return bool(result.rowcount)


async def call_so_far(db: Database, call_id: str) -> CallSoFar | None:
    """The call row, its transcript and where its record sequences go on; and the call is
    live again (a stream drop had closed its record)."""
    async with db.tx() as conn:
        row = (await conn.execute(sa.select(calls).where(calls.c.id == call_id))).mappings().first()
        if row is None:
            return None
        lines = [
            dict(r)
            for r in (
                await conn.execute(
                    sa.select(call_transcript)
                    .where(call_transcript.c.call_id == call_id)
                    .order_by(call_transcript.c.seq)
                )
            ).mappings()
        ]
        last_event = (
            await conn.execute(
                sa.select(sa.func.max(call_events.c.seq)).where(call_events.c.call_id == call_id)
            )
        ).scalar_one()
        fields = (
            await conn.execute(
                sa.select(call_events.c.detail).where(
                    call_events.c.call_id == call_id, call_events.c.kind == "keypad_field"
                ).order_by(call_events.c.seq)
            )
        ).scalars().all()
        resumes = (
            await conn.execute(
                sa.select(sa.func.count()).select_from(stream_resumes).where(
                    stream_resumes.c.call_id == call_id, stream_resumes.c.used_at.is_not(None)
                )
            )
        ).scalar_one()
        await conn.execute(
            sa.update(calls)
            .where(calls.c.id == call_id)
            .values(end_reason=None, ended_at=None, duration_s=None, status="in-progress")
        )
    next_line = (max(r["seq"] for r in lines) + 1) if lines else 0
    next_event = 0 if last_event is None else last_event + 1
    names = [str(d.get("name")) for d in fields if isinstance(d, dict) and d.get("name")]
    return CallSoFar(dict(row), lines, next_line, next_event, int(resumes), names)
