"""Phone numbers we may dial: validated, normalised to E.164, limited to allowed countries.

The country allow-list is a toll-fraud guard: a leaked token or a poisoned CSV must not be able
to place calls to premium-rate destinations abroad. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType


class NumberRefused(ValueError):
    """A number we will not dial. ``reason`` is safe to log (it holds no digits)."""

    def __init__(self, reason: str, region: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.region = region


@dataclass(frozen=True, slots=True)
class DialNumber:
    e164: str
    region: str  # ISO 3166 alpha-2


# Types that cannot take a voice call, or that bill the caller at premium rates.
_REFUSED_TYPES = {
    PhoneNumberType.PREMIUM_RATE: "premium-rate number",
    PhoneNumberType.SHARED_COST: "shared-cost number",
    PhoneNumberType.PAGER: "pager number",
}


_PARSE_ERRORS = {
    NumberParseException.INVALID_COUNTRY_CODE: "no or unknown country code",
    NumberParseException.NOT_A_NUMBER: "not a number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}


def normalise(
    raw: str, allowed_countries: Collection[str] | None, default_region: str | None = None
) -> DialNumber:
    """Parse ``raw`` (``+14155550123``, or national format when ``default_region`` is given)
    and check it may be dialled (``allowed_countries`` None: any country). Raises
    ``NumberRefused`` with a reason that holds no digits."""
    text = (raw or "").strip()
    if not text:
        raise NumberRefused("empty number")
    if len(text) > 40:
        raise NumberRefused("number too long")
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except NumberParseException as exc:
        why = _PARSE_ERRORS.get(exc.error_type, "unreadable")
        raise NumberRefused(f"not a phone number ({why})") from None
    region = phonenumbers.region_code_for_number(number)
    if not phonenumbers.is_valid_number(number):
        raise NumberRefused("not a valid number", region)
    if allowed_countries is not None and region not in {c.upper() for c in allowed_countries}:
        raise NumberRefused(f"country {region or 'unknown'} is not in ALLOWED_COUNTRIES", region)
    kind = phonenumbers.number_type(number)
    if kind in _REFUSED_TYPES:
        raise NumberRefused(_REFUSED_TYPES[kind], region)
    return DialNumber(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        region=region,
    )
