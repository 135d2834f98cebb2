"""Campaign rules: calling hours in the callee's local time, retries, throttling. Pure.

Nothing here reads the clock: every function takes ``now`` (UTC epoch seconds).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as pn_timezone

DEFAULT_HOURS = (9 * 60, 20 * 60)  # 09:00-20:00 local, in minutes after midnight
_UNKNOWN_TZ = "Etc/Unknown"


def timezones_for(e164: str, fallback: str = "UTC") -> tuple[str, ...]:
    """IANA zones a number may ring in. A number whose area spans several zones (or a whole
    country) yields all of them; ``fallback`` when the metadata knows none."""
    number = phonenumbers.parse(e164, None)
    zones = tuple(z for z in pn_timezone.time_zones_for_number(number) if z != _UNKNOWN_TZ)
    return zones or (fallback,)


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _open_in(now: float, zone: str, start_min: int, end_min: int) -> bool:
    local = dt.datetime.fromtimestamp(now, _zone(zone))
    minute = local.hour * 60 + local.minute
    return start_min <= minute < end_min


def within_hours(now: float, zones: Sequence[str], start_min: int, end_min: int) -> bool:
    """True when it is calling time in *every* zone the number may be in: with a number that
    could ring in either of two zones, only the overlap of both windows is safe."""
    return all(_open_in(now, z, start_min, end_min) for z in zones)


def next_open(
    now: float, zones: Sequence[str], start_min: int, end_min: int, days: int = 8
) -> float | None:
    """The earliest time at or after ``now`` when calling is allowed in every zone; None when
    the windows never overlap. The answer is ``now`` or the opening minute of one zone's
    window on some day (the intersection of windows starts where the latest one opens)."""
    if within_hours(now, zones, start_min, end_min):
        return now
    candidates: set[float] = set()
    for zone in zones:
        tz = _zone(zone)
        today = dt.datetime.fromtimestamp(now, tz).date()
        for day in range(days):
            date = today + dt.timedelta(days=day)
            local = dt.datetime.combine(date, dt.time(), tz) + dt.timedelta(minutes=start_min)
            # Normalise through UTC so a DST jump lands on a real local time.
            at = local.astimezone(dt.UTC).timestamp()
            if at > now:
                candidates.add(at)
    for at in sorted(candidates):
        if within_hours(at, zones, start_min, end_min):
            return at
    return None


def throttle_backoff(consecutive: int, base_s: float = 1.0, cap_s: float = 60.0) -> float:
    """Wait after HTTP 429 / error 20429 (too many concurrent REST requests): 1, 2, 4 .. 60 s."""
    return min(base_s * (2 ** max(0, consecutive - 1)), cap_s)
