"""Call records: one row per call (inbound, outbound, web), its transcript, turns and events.

Write functions take an open connection so a caller can group them in one transaction (the
record writer batches; a status callback updates the call and its campaign contact together).
``CallStore`` wraps them for one-off use and holds the read queries the calls API and the
operator dashboard use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.store.db import Database
from app.store.schema import call_events, call_transcript, call_turns, calls, dial_attempts
from telephony import call_status


@dataclass(frozen=True, slots=True)
class OutboundContext:
    """What the answer webhook needs to build ``CallInfo`` for an outbound call we placed."""

    call_sid: str
    to_number: str | None
    from_number: str | None
    variables: dict[str, str] = field(default_factory=dict)
    prompt: str | None = None
    agent: str | None = None
    campaign_id: str | None = None
    contact_id: int | None = None
    attempt: int | None = None
    answered_by: str | None = None

    def call_variables(self) -> dict[str, str]:
        """Prompt variables for ``CallInfo.variables``; a per-call prompt travels as ``prompt``."""
        merged = dict(self.variables)
        if self.prompt:
            merged["prompt"] = self.prompt
        return merged


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """The result of applying one Twilio status callback."""

    applied: bool  # False: a duplicate or a late, out-of-order callback
    status: str  # the call's status after the update
    final: bool
    row: Mapping[str, Any]


# --------------------------------------------------------------------------- writes


async def open_call(
    conn: AsyncConnection,
    db: Database,
    *,
    call_id: str,
    now: float,
    transport: str = "twilio",
    direction: str = "inbound",
    from_number: str | None = None,
    to_number: str | None = None,
    agent: str | None = None,
    variables: Mapping[str, str] | None = None,
    status: str | None = None,
) -> None:
    """Create the call row, or fill in what an earlier writer did not know. Never clobbers."""
    values: dict[str, Any] = {
        "id": call_id,
        "transport": transport,
        "direction": direction,
        "from_number": from_number,
        "to_number": to_number,
        "agent": agent,
        "variables": dict(variables) if variables else None,
        "status": status or ("in-progress" if transport != "twilio" else "queued"),
        "created_at": now,
        "started_at": now,
        "updated_at": now,
    }
    stmt = db.insert(calls).values(**values)
    keep = {
        name: sa.func.coalesce(calls.c[name], stmt.excluded[name])
        for name in ("from_number", "to_number", "agent", "variables", "started_at")
    }
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[calls.c.id],
            set_={**keep, "transport": stmt.excluded.transport, "updated_at": now},
        )
    )


async def record_outbound(
    conn: AsyncConnection,
    db: Database,
    *,
    call_sid: str,
    now: float,
    to_number: str,
    from_number: str,
    variables: Mapping[str, str] | None,
    prompt: str | None,
    agent: str | None = None,
    campaign_id: str | None = None,
    contact_id: int | None = None,
    attempt: int | None = None,
) -> None:
    """The dialler's facts about a call it placed. A status callback may have created the row
    first (Twilio can call back before ``calls.create`` returns); its status is kept."""
    values: dict[str, Any] = {
        "id": call_sid,
        "transport": "twilio",
        "direction": "outbound",
        "to_number": to_number,
        "from_number": from_number,
        "variables": dict(variables) if variables else None,
        "prompt": prompt,
        "agent": agent,
        "campaign_id": campaign_id,
        "contact_id": contact_id,
        "attempt": attempt,
        "created_at": now,
        "updated_at": now,
    }
    stmt = db.insert(calls).values(**values)
    own = ("direction", "to_number", "from_number", "variables", "prompt", "agent")
    links = ("campaign_id", "contact_id", "attempt")
    set_ = {name: stmt.excluded[name] for name in own}
    set_.update({name: sa.func.coalesce(calls.c[name], stmt.excluded[name]) for name in links})
    least = sa.func.min if db.is_sqlite else sa.func.least  # SQLite's LEAST is a 2-arg MIN
    set_["created_at"] = least(calls.c.created_at, stmt.excluded.created_at)
    await conn.execute(stmt.on_conflict_do_update(index_elements=[calls.c.id], set_=set_))


async def apply_status(
    conn: AsyncConnection,
    db: Database,
    *,
    call_sid: str,
    status: str,
    now: float,
    seq: int | None = None,
    duration_s: float | None = None,
    answered_by: str | None = None,
    error_code: str | None = None,
    direction: str | None = None,
    links: Mapping[str, Any] | None = None,
) -> StatusUpdate:
    """Apply a Twilio status callback: forward-only, so duplicates and stragglers are no-ops."""
    await conn.execute(
        db.insert(calls)
        .values(
            id=call_sid,
            transport="twilio",
            direction=direction or ("outbound" if links else "inbound"),
            status="queued",
            created_at=now,
            updated_at=now,
            **dict(links or {}),
        )
        .on_conflict_do_nothing(index_elements=[calls.c.id])
    )
    row = (
        (await conn.execute(sa.select(calls).where(calls.c.id == call_sid).with_for_update()))
        .mappings()
        .one()
    )
    changes: dict[str, Any] = {}
    if links:  # ids from the callback URL bind the call to its contact even after a crash
        changes.update({k: v for k, v in links.items() if row[k] is None and v is not None})
    if answered_by and row["answered_by"] is None:
        changes["answered_by"] = answered_by
    applied = call_status.should_apply(row["status"], status)
    if applied:
        changes.update(status=status, status_seq=seq if seq is not None else row["status_seq"])
        if status == "in-progress" and row["answered_at"] is None:
            changes["answered_at"] = now
        if call_status.is_final(status):
            if row["ended_at"] is None:
                changes["ended_at"] = now
            if duration_s is not None:
                changes["duration_s"] = duration_s
            if error_code:
                changes["error_code"] = error_code[:16]
    if changes:
        changes["updated_at"] = now
        await conn.execute(sa.update(calls).where(calls.c.id == call_sid).values(**changes))
    merged = {**row, **changes}
    return StatusUpdate(
        applied=applied,
        status=merged["status"],
        final=call_status.is_final(merged["status"]),
        row=merged,
    )


async def set_answered_by(
    conn: AsyncConnection, *, call_sid: str, answered_by: str, now: float
) -> bool:
    result = await conn.execute(
        sa.update(calls)
        .where(calls.c.id == call_sid, calls.c.answered_by.is_(None))
        .values(answered_by=answered_by, updated_at=now)
    )
    return bool(result.rowcount)


async def claim_amd_action(
    conn: AsyncConnection, *, call_sid: str, action: str, now: float
) -> bool:
    """Record the answering-machine action once; True only for the first claimant, so a
    retried AMD callback never leaves a second voicemail."""
    result = await conn.execute(
        sa.update(calls)
        .where(calls.c.id == call_sid, calls.c.amd_action.is_(None))
        .values(amd_action=action, updated_at=now)
    )
    return bool(result.rowcount)


async def set_outcome(
    conn: AsyncConnection, *, call_id: str, outcome: str, summary: str | None, now: float
) -> bool:
    values: dict[str, Any] = {"outcome": outcome, "updated_at": now}
    if summary is not None:
        values["summary"] = summary
    result = await conn.execute(sa.update(calls).where(calls.c.id == call_id).values(**values))
    return bool(result.rowcount)


async def set_call_outcome(
    conn: AsyncConnection, call_id: str, outcome: str, summary: str | None, now: float
) -> dict[str, Any] | None:
    """The outcome (and summary) on the call row; its contact, direction and number."""
    row = (
        await conn.execute(
            sa.select(calls.c.contact_id, calls.c.to_number, calls.c.direction)
            .where(calls.c.id == call_id)
        )
    ).mappings().first()
    if row is None:
        return None
    await conn.execute(
        sa.update(calls).where(calls.c.id == call_id).values(
            outcome=outcome, updated_at=now, **({"summary": summary} if summary else {})
        )
    )
    return dict(row)


async def set_recording_url(conn: AsyncConnection, call_id: str, url: str, now: float) -> bool:
    """The recording's URL on the call row; False when there is no such call."""
    result = await conn.execute(
        sa.update(calls)
        .where(calls.c.id == call_id)
        .values(recording_url=url[:500], updated_at=now)
    )
    return bool(result.rowcount)


async def attempt_links(
    conn: AsyncConnection, attempt_id: int | None, sid: str
) -> dict[str, Any] | None:
    """The campaign, contact and attempt a dial attempt id names, binding the attempt to its
    CallSid on first sight; None when it names no attempt or another call's."""
    if attempt_id is None:
        return None
    row = (
        await conn.execute(sa.select(dial_attempts).where(dial_attempts.c.id == attempt_id))
    ).mappings().first()
    if row is None or (row["call_sid"] and row["call_sid"] != sid):
        return None
    if row["call_sid"] is None:
        await conn.execute(
            sa.update(dial_attempts).where(dial_attempts.c.id == attempt_id).values(call_sid=sid)
        )
    return {"campaign_id": row["campaign_id"], "contact_id": row["contact_id"],
            "attempt": row["attempt"]}


FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


async def end_call(
    conn: AsyncConnection,
    *,
    call_id: str,
    reason: str,
    outcome: str | None,
    now: float,
) -> None:
    """The agent's side of the end. Twilio's status callbacks own a phone call's status and
    duration; a web call has no such callbacks, so its status and duration are set here."""
    row = (
        (await conn.execute(sa.select(calls).where(calls.c.id == call_id).with_for_update()))
        .mappings()
        .first()
    )
    if row is None:
        return
    values: dict[str, Any] = {"end_reason": reason[:200], "updated_at": now}
    if outcome and not row["outcome"]:
        values["outcome"] = outcome
    # A web call has no status callbacks; a phone call's may never come (no status URL on the
    # number, a crash): its end stands until Twilio's "completed" callback gives the billed
    # duration. A final status Twilio already sent is kept.
    if row["transport"] != "twilio" or row["status"] not in FINAL_STATUSES:
        values["ended_at"] = row["ended_at"] or now
        values["status"] = "completed"
        if row["started_at"] is not None and row["duration_s"] is None:
            values["duration_s"] = round(now - row["started_at"], 3)
    await conn.execute(sa.update(calls).where(calls.c.id == call_id).values(**values))


async def add_transcript(conn: AsyncConnection, db: Database, rows: Sequence[dict]) -> None:
    if rows:
        stmt = db.insert(call_transcript).on_conflict_do_nothing(
            index_elements=[call_transcript.c.call_id, call_transcript.c.seq]
        )
        await conn.execute(stmt, list(rows))


async def add_events(conn: AsyncConnection, db: Database, rows: Sequence[dict]) -> None:
    if rows:
        stmt = db.insert(call_events).on_conflict_do_nothing(
            index_elements=[call_events.c.call_id, call_events.c.seq]
        )
        await conn.execute(stmt, list(rows))


async def upsert_turn(conn: AsyncConnection, db: Database, row: dict) -> None:
    stmt = db.insert(call_turns).values(**row)
    update = {k: stmt.excluded[k] for k in row if k not in ("call_id", "turn")}
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[call_turns.c.call_id, call_turns.c.turn], set_=update
        )
    )


async def merge_usage(
    conn: AsyncConnection, *, call_id: str, usage: Mapping[str, float], now: float
) -> None:
    row = (
        await conn.execute(
            sa.select(calls.c.usage).where(calls.c.id == call_id).with_for_update()
        )
    ).first()
    if row is None:
        return
    total = dict(row.usage or {})
    for key, value in usage.items():
        total[key] = round(total.get(key, 0) + value, 3)
    await conn.execute(
        sa.update(calls).where(calls.c.id == call_id).values(usage=total, updated_at=now)
    )


# --------------------------------------------------------------------------- store object


class CallStore:
    """Queries and one-off writes on call records."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def call_context(self, call_sid: str) -> OutboundContext | None:
        """For the answer webhook: the variables and prompt of an outbound call we placed.
        None for a call we did not place (inbound, or placed by someone else)."""
        async with self.db.read() as conn:
            row = (
                (await conn.execute(sa.select(calls).where(calls.c.id == call_sid)))
                .mappings()
                .first()
            )
        if row is None or row["direction"] != "outbound":
            return None
        return OutboundContext(
            call_sid=call_sid,
            to_number=row["to_number"],
            from_number=row["from_number"],
            variables={str(k): str(v) for k, v in (row["variables"] or {}).items()},
            prompt=row["prompt"],
            agent=row["agent"],
            campaign_id=row["campaign_id"],
            contact_id=row["contact_id"],
            attempt=row["attempt"],
            answered_by=row["answered_by"],
        )

    async def set_outcome(
        self, call_id: str, outcome: str, summary: str | None, now: float
    ) -> bool:
        async with self.db.tx() as conn:
            return await set_outcome(
                conn, call_id=call_id, outcome=outcome, summary=summary, now=now
            )

    async def list_calls(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        direction: str | None = None,
        campaign_id: str | None = None,
        status: str | None = None,
        since: float | None = None,
        transport: str | None = None,
        search: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first. Rows carry phone numbers: mask them before they reach a log.
        ``search``: a call id's start, or words of its outcome, end reason or summary."""
        query = sa.select(calls).order_by(calls.c.created_at.desc(), calls.c.id)
        if transport:
            query = query.where(calls.c.transport == transport)
        if search:
            like = "%" + search.replace("\\", "").replace("%", "").replace("_", "")[:64] + "%"
            query = query.where(sa.or_(
                calls.c.id.like(like.lstrip("%")), calls.c.outcome.ilike(like),
                calls.c.end_reason.ilike(like), calls.c.summary.ilike(like),
            ))
        if direction:
            query = query.where(calls.c.direction == direction)
        if campaign_id:
            query = query.where(calls.c.campaign_id == campaign_id)
        if status:
            query = query.where(calls.c.status == status)
        if since is not None:
            query = query.where(calls.c.created_at >= since)
        query = query.limit(max(1, min(limit, 1000))).offset(max(0, offset))
        async with self.db.read() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings()]

    async def count_since(self, transport: str, since: float) -> int:
        """Calls over ``transport`` created at or after ``since`` (the web calls' daily cap)."""
        query = sa.select(sa.func.count()).select_from(calls).where(
            calls.c.transport == transport, calls.c.created_at >= since
        )
        async with self.db.read() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def get_call(self, call_id: str) -> dict[str, Any] | None:
        """One call with its transcript (in order), turn metrics and events."""
        async with self.db.read() as conn:
            row = (
                (await conn.execute(sa.select(calls).where(calls.c.id == call_id)))
                .mappings()
                .first()
            )
            if row is None:
                return None
            transcript = (
                await conn.execute(
                    sa.select(call_transcript)
                    .where(call_transcript.c.call_id == call_id)
                    .order_by(call_transcript.c.seq)
                )
            ).mappings()
            lines = [dict(r) for r in transcript]
            turns = (
                await conn.execute(
                    sa.select(call_turns)
                    .where(call_turns.c.call_id == call_id)
                    .order_by(call_turns.c.turn)
                )
            ).mappings()
            turn_rows = [dict(r) for r in turns]
            events = (
                await conn.execute(
                    sa.select(call_events)
                    .where(call_events.c.call_id == call_id)
                    .order_by(call_events.c.seq)
                )
            ).mappings()
            event_rows = [dict(r) for r in events]
        return {**dict(row), "transcript": lines, "turns": turn_rows, "events": event_rows}
