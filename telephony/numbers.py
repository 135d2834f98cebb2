"""Phone numbers on the wire: Twilio speaks E.164 (``+`` country code, up to 15 digits)."""

from __future__ import annotations

import re

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def is_e164(value: str) -> bool:
    """``+14155550123`` is; ``4155550123``, ``+1 415 555 0123`` and ``+0123`` are not."""
    return bool(_E164.match(value))
