"""Campaign rows: the types the campaign store speaks, and the steps that run inside a caller's
transaction (a call's result on its contact, an outcome, the do-not-call check)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.store.schema import campaign_contacts, campaigns, dial_attempts, do_not_call

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

