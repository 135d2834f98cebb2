"""Campaign operations shared by the HTTP API and the command line."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from app.campaigns.csvimport import CsvImport, RowError, parse_contacts
from app.config import OutboundSettings, parse_hhmm, parse_hours
from app.logs import event, get_logger
from app.store import Store
from app.store.campaigns import CampaignSettings

log = get_logger(__name__)

SETTING_KEYS = ("cps", "max_concurrent", "max_attempts", "retry_base_s", "hours")


class CampaignInputError(ValueError):
    """A campaign setting is out of range; the message names it."""


def campaign_settings(out: OutboundSettings, overrides: Mapping[str, Any]) -> CampaignSettings:
    """Defaults from the environment, overridden per campaign, checked against the account."""
    unknown = set(overrides) - set(SETTING_KEYS)
    if unknown:
        raise CampaignInputError(f"unknown campaign settings: {', '.join(sorted(unknown))}")
    try:
        cps = float(overrides.get("cps", out.campaign_cps))
        max_concurrent = int(overrides.get("max_concurrent", out.campaign_max_concurrent))
        max_attempts = int(overrides.get("max_attempts", out.campaign_max_attempts))
        retry_base_s = float(overrides.get("retry_base_s", out.campaign_retry_base_s))
        hours = overrides.get("hours", out.campaign_hours)
        if isinstance(hours, str):
            start, end = parse_hours(hours)
        else:
            start, end = (parse_hhmm(h) for h in hours)
    except (TypeError, ValueError) as exc:
        raise CampaignInputError(f"bad campaign setting: {exc}") from None
    if not 0 < cps <= out.account_cps:
        raise CampaignInputError(f"cps must be above 0 and at most TWILIO_CPS ({out.account_cps})")
    if not 1 <= max_concurrent <= 10_000:
        raise CampaignInputError("max_concurrent must be between 1 and 10000")
    if not 1 <= max_attempts <= 20:
        raise CampaignInputError("max_attempts must be between 1 and 20")
    if not 0 <= retry_base_s <= 86_400:
        raise CampaignInputError("retry_base_s must be between 0 and 86400")
    if not start < end:
        raise CampaignInputError("calling hours must start before they end")
    return CampaignSettings(
        cps=cps,
        max_concurrent=max_concurrent,
        max_attempts=max_attempts,
        retry_base_s=retry_base_s,
        hours_start_min=start,
        hours_end_min=end,
    )


def error_summary(errors: Sequence[RowError], first: int = 5) -> dict[str, Any]:
    """How many rows were refused, for which reasons (counted by kind), and the first few lines."""
    kinds = Counter(re.sub(r"\d+", "N", e.reason)[:60] for e in errors)
    return {
        "rejected": len(errors),
        "reasons": dict(kinds.most_common(5)),
        "first_lines": [e.line for e in errors[:first]],
    }


async def create_from_csv(
    store: Store,
    out: OutboundSettings,
    *,
    name: str,
    csv_text: str,
    now: float,
    prompt: str | None = None,
    agent: str | None = None,
    from_number: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    allow_invalid: bool = False,
) -> tuple[str | None, CsvImport]:
    """Import and create. With bad rows and not ``allow_invalid``, nothing is created: the
    caller gets every bad line back to fix the file."""
    settings = campaign_settings(out, overrides or {})
    # Parsing and number checks take ~100 ms per 10,000 rows: in a worker thread, so live
    # calls on this loop are not stalled by an upload.
    parsed = await asyncio.to_thread(
        parse_contacts,
        csv_text,
        allowed_countries=out.allowed_countries,
        default_region=out.default_region,
    )
    if parsed.errors:  # one line for the whole file, not one per bad row
        event(log, "campaign_csv_rows_rejected", level=30, **error_summary(parsed.errors))
    if not parsed.contacts or (parsed.errors and not allow_invalid):
        return None, parsed
    campaign_id = await store.campaigns.create(
        name=name or "campaign",
        contacts=parsed.contacts,
        settings=settings,
        now=now,
        prompt=prompt,
        agent=agent,
        from_number=from_number,
    )
    event(
        log, "campaign_created", campaign_id=campaign_id, contacts=len(parsed.contacts),
        rejected=len(parsed.errors),
    )
    return campaign_id, parsed
