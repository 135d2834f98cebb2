"""Campaigns, their contacts, dial attempts, the do-not-call list and global pacing.

Everything that several dialler instances race on happens in one transaction with row locks:
a contact is claimed under the campaign's row lock (which makes the in-flight count exact)
with ``FOR UPDATE SKIP LOCKED`` on the contacts, and the claim inserts the attempt row whose
unique key forbids a second dial of the same attempt. On SQLite every transaction holds the
write lock from BEGIN (see ``app.store.db``), which gives the same guarantees.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.store.db import Database
from app.store.schema import campaign_contacts, campaigns, dial_attempts, dial_pacing, do_not_call

ACTIVE = ("pending", "calling")
TRANSITIONS = {
    "run": ({"draft", "paused"}, "running"),
    "pause": ({"running"}, "paused"),
    "resume": ({"paused"}, "running"),
    "cancel": ({"draft", "running", "paused"}, "cancelled"),
}


class CampaignStateError(ValueError):
    """A command that does not apply in the campaign's current state."""


# The campaign rules the store applies inside its transactions, passed in by the feature that
# owns them (app.campaigns.policy): the store knows tables, not calling hours or retry policy.
# next_open(now, time zones, start min, end min) -> when a window opens (None: never)
NextOpen = Callable[[float, Sequence[str], int, int], float | None]
# retry_rule(result, attempt, max attempts, retry base s, now) -> when to try again (None: done)
RetryRule = Callable[[str, int, int, float, float], float | None]


@dataclass(frozen=True, slots=True)
class NewContact:
    line: int
    phone: str  # E.164, validated
    timezones: tuple[str, ...]
    variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CampaignSettings:
    cps: float = 1.0
    max_concurrent: int = 5
    max_attempts: int = 3
    retry_base_s: float = 900.0
    hours_start_min: int = 9 * 60  # 09:00 in the callee's time
    hours_end_min: int = 20 * 60  # 20:00


@dataclass(frozen=True, slots=True)
class ClaimedContact:
    contact_id: int
    attempt_id: int
    attempt: int
    phone: str
    timezones: tuple[str, ...]
    variables: dict[str, str]


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of one claim: a contact to dial, or why there is none."""

    campaign_status: str
    contact: ClaimedContact | None = None
    in_flight: int = 0
    pending: int = 0
    next_due: float | None = None  # earliest next_attempt_at of a pending contact
    at_capacity: bool = False


def _zones(text: str) -> tuple[str, ...]:
    return tuple(z for z in text.split(",") if z)


class CampaignStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ----------------------------------------------------------------- campaigns

    async def create(
        self,
        *,
        name: str,
        contacts: Sequence[NewContact],
        settings: CampaignSettings,
        now: float,
        prompt: str | None = None,
        agent: str | None = None,
        from_number: str | None = None,
    ) -> str:
        campaign_id = str(uuid.uuid4())
        async with self.db.tx() as conn:
            await conn.execute(
                campaigns.insert().values(
                    id=campaign_id,
                    name=name[:200],
                    status="draft",
                    prompt=prompt,
                    agent=agent,
                    from_number=from_number,
                    cps=settings.cps,
                    max_concurrent=settings.max_concurrent,
                    max_attempts=settings.max_attempts,
                    retry_base_s=settings.retry_base_s,
                    hours_start_min=settings.hours_start_min,
                    hours_end_min=settings.hours_end_min,
                    created_at=now,
                    updated_at=now,
                )
            )
            rows = [
                {
                    "campaign_id": campaign_id,
                    "line": c.line,
                    "phone": c.phone,
                    "timezones": ",".join(c.timezones),
                    "variables": dict(c.variables),
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "updated_at": now,
                }
                for c in contacts
            ]
            # Small batches: each is prepared on the event loop, and live calls share it.
            for start in range(0, len(rows), 100):
                await conn.execute(campaign_contacts.insert(), rows[start : start + 100])
        return campaign_id

    async def get(self, campaign_id: str) -> dict[str, Any] | None:
        async with self.db.read() as conn:
            row = (
                (await conn.execute(sa.select(campaigns).where(campaigns.c.id == campaign_id)))
                .mappings()
                .first()
            )
        return dict(row) if row else None

    async def list(self, status: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(campaigns).order_by(campaigns.c.created_at.desc())
        if status:
            query = query.where(campaigns.c.status == status)
        async with self.db.read() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings()]

    async def command(self, campaign_id: str, command: str, now: float) -> str:
        """run | pause | resume | cancel. Returns the new status; raises CampaignStateError."""
        if command not in TRANSITIONS:
            raise CampaignStateError(f"unknown command {command!r}")
        allowed, new = TRANSITIONS[command]
        async with self.db.tx() as conn:
            row = (
                await conn.execute(
                    sa.select(campaigns.c.status)
                    .where(campaigns.c.id == campaign_id)
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise KeyError(campaign_id)
            if row.status not in allowed:
                raise CampaignStateError(f"cannot {command} a campaign that is {row.status}")
            values: dict[str, Any] = {"status": new, "updated_at": now}
            if command == "run":
                values["started_at"] = now
            if command == "cancel":
                values["finished_at"] = now
                await conn.execute(
                    sa.update(campaign_contacts)
                    .where(
                        campaign_contacts.c.campaign_id == campaign_id,
                        campaign_contacts.c.status == "pending",
                    )
                    .values(status="cancelled", updated_at=now)
                )
            await conn.execute(
                sa.update(campaigns).where(campaigns.c.id == campaign_id).values(**values)
            )
        return new

    async def finish_if_done(self, campaign_id: str, now: float) -> bool:
        """Mark a running campaign completed once no contact is pending or in flight."""
        async with self.db.tx() as conn:
            active = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(campaign_contacts)
                .where(
                    campaign_contacts.c.campaign_id == campaign_id,
                    campaign_contacts.c.status.in_(ACTIVE),
                )
            )
            if active:
                return False
            result = await conn.execute(
                sa.update(campaigns)
                .where(campaigns.c.id == campaign_id, campaigns.c.status == "running")
                .values(status="completed", finished_at=now, updated_at=now)
            )
            return bool(result.rowcount)

    # ----------------------------------------------------------------- claiming

    async def claim(
        self, campaign_id: str, *, instance: str, now: float, next_open: NextOpen
    ) -> Claim:
        """Claim the next due contact for dialling, if the campaign runs and has room."""
        async with self.db.tx() as conn:
            camp = (
                (
                    await conn.execute(
                        sa.select(campaigns)
                        .where(campaigns.c.id == campaign_id)
                        .with_for_update()
                    )
                )
                .mappings()
                .first()
            )
            if camp is None:
                raise KeyError(campaign_id)
            if camp["status"] != "running":
                return Claim(campaign_status=camp["status"])
            counts = await _active_counts(conn, campaign_id)
            in_flight, pending = counts.get("calling", 0), counts.get("pending", 0)
            if in_flight >= camp["max_concurrent"]:
                return Claim("running", in_flight=in_flight, pending=pending, at_capacity=True)
            candidates = (
                (
                    await conn.execute(
                        sa.select(campaign_contacts)
                        .where(
                            campaign_contacts.c.campaign_id == campaign_id,
                            campaign_contacts.c.status == "pending",
                            campaign_contacts.c.next_attempt_at <= now,
                        )
                        .order_by(campaign_contacts.c.next_attempt_at, campaign_contacts.c.id)
                        .limit(25)
                        .with_for_update(skip_locked=True)
                    )
                )
                .mappings()
                .all()
            )
            blocked = await _dnc_among(conn, [c["phone"] for c in candidates])
            for c in candidates:
                if c["phone"] in blocked:  # the do-not-call list is checked at dial time
                    await _update_contact(
                        conn, c["id"], now, status="dnc", last_result="dnc", next_attempt_at=now
                    )
                    pending -= 1
                    continue
                zones = _zones(c["timezones"])
                opens = next_open(now, zones, camp["hours_start_min"], camp["hours_end_min"])
                if opens is None:
                    await _update_contact(
                        conn, c["id"], now, status="failed", last_error="no calling window"
                    )
                    pending -= 1
                    continue
                if opens > now:
                    await _update_contact(conn, c["id"], now, next_attempt_at=opens)
                    continue
                attempt = c["attempts"] + 1
                await _update_contact(
                    conn,
                    c["id"],
                    now,
                    status="calling",
                    attempts=attempt,
                    claimed_by=instance,
                    claimed_at=now,
                    last_call_sid=None,
                )
                attempt_id = (
                    await conn.execute(
                        dial_attempts.insert()
                        .values(
                            campaign_id=campaign_id,
                            contact_id=c["id"],
                            attempt=attempt,
                            instance=instance,
                            claimed_at=now,
                        )
                        .returning(dial_attempts.c.id)
                    )
                ).scalar_one()
                contact = ClaimedContact(
                    contact_id=c["id"],
                    attempt_id=attempt_id,
                    attempt=attempt,
                    phone=c["phone"],
                    timezones=zones,
                    variables={str(k): str(v) for k, v in (c["variables"] or {}).items()},
                )
                return Claim("running", contact, in_flight=in_flight + 1, pending=pending - 1)
            next_due = await conn.scalar(
                sa.select(sa.func.min(campaign_contacts.c.next_attempt_at)).where(
                    campaign_contacts.c.campaign_id == campaign_id,
                    campaign_contacts.c.status == "pending",
                )
            )
            return Claim("running", in_flight=in_flight, pending=pending, next_due=next_due)

    async def release(self, contact: ClaimedContact, *, now: float, retry_at: float) -> None:
        """Undo a claim whose call was never placed (429, paused, calling hours closed while
        waiting for a pacing slot): the attempt did not happen."""
        async with self.db.tx() as conn:
            await conn.execute(
                sa.delete(dial_attempts).where(
                    dial_attempts.c.id == contact.attempt_id, dial_attempts.c.call_sid.is_(None)
                )
            )
            await conn.execute(
                sa.update(campaign_contacts)
                .where(
                    campaign_contacts.c.id == contact.contact_id,
                    campaign_contacts.c.status == "calling",
                    campaign_contacts.c.attempts == contact.attempt,
                )
                .values(
                    status="pending",
                    attempts=contact.attempt - 1,
                    next_attempt_at=retry_at,
                    claimed_by=None,
                    updated_at=now,
                )
            )

    async def mark_dialed(self, contact: ClaimedContact, *, call_sid: str, now: float) -> None:
        async with self.db.tx() as conn:
            await conn.execute(
                sa.update(dial_attempts)
                .where(dial_attempts.c.id == contact.attempt_id)
                .values(call_sid=call_sid, dialed_at=now)
            )
            await conn.execute(
                sa.update(campaign_contacts)
                .where(
                    campaign_contacts.c.id == contact.contact_id,
                    campaign_contacts.c.attempts == contact.attempt,
                )
                .values(last_call_sid=call_sid, updated_at=now)
            )

    async def dial_failed(
        self, contact: ClaimedContact, *, result: str, error: str, now: float, permanent: bool,
        retry_rule: RetryRule,
    ) -> None:
        """``calls.create`` was refused: a permanent refusal (invalid number, geo permission)
        ends the contact; anything else counts as a failed attempt and may be retried."""
        async with self.db.tx() as conn:
            await conn.execute(
                sa.update(dial_attempts)
                .where(dial_attempts.c.id == contact.attempt_id)
                .values(result=result, error=error[:200], dialed_at=now)
            )
            await apply_result(
                conn,
                contact_id=contact.contact_id,
                attempt=contact.attempt,
                result=result,
                now=now,
                error=error,
                final=permanent,
                retry_rule=retry_rule,
            )

    async def note_attempt_error(self, contact: ClaimedContact, *, error: str) -> None:
        async with self.db.tx() as conn:
            await conn.execute(
                sa.update(dial_attempts)
                .where(dial_attempts.c.id == contact.attempt_id)
                .values(error=error[:200])
            )

    # ----------------------------------------------------------------- reconciling

    async def in_flight(self, campaign_id: str) -> list[dict[str, Any]]:
        """Contacts in ``calling`` with their claim time and call sid (None: not placed yet,
        or the dialler stopped between placing the call and recording it)."""
        query = sa.select(
            campaign_contacts.c.id,
            campaign_contacts.c.attempts,
            campaign_contacts.c.claimed_at,
            campaign_contacts.c.claimed_by,
            dial_attempts.c.call_sid,
            dial_attempts.c.id.label("attempt_id"),
        ).select_from(
            campaign_contacts.join(
                dial_attempts,
                sa.and_(
                    dial_attempts.c.contact_id == campaign_contacts.c.id,
                    dial_attempts.c.attempt == campaign_contacts.c.attempts,
                ),
                isouter=True,
            )
        )
        query = query.where(
            campaign_contacts.c.campaign_id == campaign_id,
            campaign_contacts.c.status == "calling",
        )
        async with self.db.read() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings()]

    # ----------------------------------------------------------------- progress

    async def progress(self, campaign_id: str) -> dict[str, Any]:
        """Counts for a progress bar or dashboard: contacts per status, results, attempts."""
        cc = campaign_contacts
        async with self.db.read() as conn:
            by_status = dict(
                (
                    await conn.execute(
                        sa.select(cc.c.status, sa.func.count())
                        .where(cc.c.campaign_id == campaign_id)
                        .group_by(cc.c.status)
                    )
                ).all()
            )
            by_result = dict(
                (
                    await conn.execute(
                        sa.select(cc.c.last_result, sa.func.count())
                        .where(cc.c.campaign_id == campaign_id, cc.c.last_result.is_not(None))
                        .group_by(cc.c.last_result)
                    )
                ).all()
            )
            outcomes = dict(
                (
                    await conn.execute(
                        sa.select(cc.c.outcome, sa.func.count())
                        .where(cc.c.campaign_id == campaign_id, cc.c.outcome.is_not(None))
                        .group_by(cc.c.outcome)
                    )
                ).all()
            )
            attempts = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(dial_attempts)
                .where(dial_attempts.c.campaign_id == campaign_id)
            )
        total = sum(by_status.values())
        done = total - by_status.get("pending", 0) - by_status.get("calling", 0)
        return {
            "total": total,
            "done": done,
            "by_status": by_status,
            "by_result": by_result,
            "outcomes": outcomes,
            "attempts": attempts or 0,
        }

    async def contacts(
        self, campaign_id: str, *, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        query = (
            sa.select(campaign_contacts)
            .where(campaign_contacts.c.campaign_id == campaign_id)
            .order_by(campaign_contacts.c.id)
        )
        if status:
            query = query.where(campaign_contacts.c.status == status)
        query = query.limit(max(1, min(limit, 5000))).offset(max(0, offset))
        async with self.db.read() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings()]

    async def attempts(self, campaign_id: str) -> list[dict[str, Any]]:
        query = (
            sa.select(dial_attempts)
            .where(dial_attempts.c.campaign_id == campaign_id)
            .order_by(dial_attempts.c.id)
        )
        async with self.db.read() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings()]

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


# --------------------------------------------------------------------------- in-transaction


async def apply_result(
    conn: AsyncConnection,
    *,
    contact_id: int,
    attempt: int,
    result: str,
    now: float,
    call_sid: str | None = None,
    answered_by: str | None = None,
    duration_s: float | None = None,
    outcome: str | None = None,
    error: str | None = None,
    final: bool = False,
    retry_rule: RetryRule,
) -> bool:
    """Finish a contact's attempt: completed, retry later, or failed for good.

    Idempotent and straggler-proof: it only applies to the attempt the contact is on and only
    while that attempt is in flight, so a repeated or late callback changes nothing.
    """
    row = (
        (
            await conn.execute(
                sa.select(campaign_contacts, campaigns.c.max_attempts, campaigns.c.retry_base_s)
                .join(campaigns, campaigns.c.id == campaign_contacts.c.campaign_id)
                .where(campaign_contacts.c.id == contact_id)
                .with_for_update(of=campaign_contacts)
            )
        )
        .mappings()
        .first()
    )
    if row is None or row["status"] != "calling" or row["attempts"] != attempt:
        return False
    values: dict[str, Any] = {"last_result": result, "claimed_by": None}
    if answered_by:
        values["answered_by"] = answered_by
    if duration_s is not None:
        values["duration_s"] = duration_s
    if outcome:
        values["outcome"] = outcome
    if error:
        values["last_error"] = error[:200]
    again = None if final else retry_rule(
        result, attempt, row["max_attempts"], row["retry_base_s"], now
    )
    if again is not None:
        values.update(status="pending", next_attempt_at=again)
    elif result in ("answered", "voicemail", "fax"):
        values["status"] = "completed"
    else:
        values["status"] = "failed"
    await _update_contact(conn, contact_id, now, **values)
    await conn.execute(
        sa.update(dial_attempts)
        .where(dial_attempts.c.contact_id == contact_id, dial_attempts.c.attempt == attempt)
        .values(result=result, **({"call_sid": call_sid} if call_sid else {}))
    )
    return True


async def set_contact_outcome(
    conn: AsyncConnection, *, contact_id: int, outcome: str, now: float
) -> None:
    await _update_contact(conn, contact_id, now, outcome=outcome)


async def _update_contact(
    conn: AsyncConnection, contact_id: int, now: float, **values: Any
) -> None:
    await conn.execute(
        sa.update(campaign_contacts)
        .where(campaign_contacts.c.id == contact_id)
        .values(updated_at=now, **values)
    )


async def _active_counts(conn: AsyncConnection, campaign_id: str) -> dict[str, int]:
    rows = await conn.execute(
        sa.select(campaign_contacts.c.status, sa.func.count())
        .where(
            campaign_contacts.c.campaign_id == campaign_id,
            campaign_contacts.c.status.in_(ACTIVE),
        )
        .group_by(campaign_contacts.c.status)
    )
    return {s: n for s, n in rows.all()}


async def _dnc_among(conn: AsyncConnection, phones: Sequence[str]) -> set[str]:
    if not phones:
        return set()
    rows = await conn.execute(sa.select(do_not_call.c.phone).where(do_not_call.c.phone.in_(phones)))
    return {r.phone for r in rows}
