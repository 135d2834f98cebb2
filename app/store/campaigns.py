"""Campaigns, their contacts, dial attempts, the do-not-call list and global pacing.

Everything that several dialler instances race on happens in one transaction with row locks:
a contact is claimed under the campaign's row lock (which makes the in-flight count exact)
with ``FOR UPDATE SKIP LOCKED`` on the contacts, and the claim inserts the attempt row whose
unique key forbids a second dial of the same attempt. On SQLite every transaction holds the
write lock from BEGIN (see ``app.store.db``), which gives the same guarantees.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from app.store.campaign_lists import ListsAndPacing
from app.store.campaign_rows import (  # noqa: F401 - the campaign store's vocabulary
    ACTIVE,
    TRANSITIONS,
    CampaignSettings,
    CampaignStateError,
    Claim,
    ClaimedContact,
    NewContact,
    NextOpen,
    RetryRule,
    _active_counts,
    _dnc_among,
    _update_contact,
    _zones,
    apply_result,
    set_contact_outcome,
)
from app.store.db import Database
from app.store.schema import campaign_contacts, campaigns, dial_attempts


class CampaignStore(ListsAndPacing):
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

