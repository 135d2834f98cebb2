"""When a campaign contact is called again after a finished call. Pure: no I/O, no clock."""

from __future__ import annotations

from telephony.call_status import RETRYABLE_RESULTS


def retry_at(
    result: str, attempts: int, max_attempts: int, base_s: float, now: float
) -> float | None:
    """When to try again after ``result`` on attempt number ``attempts``; None: stop.

    Busy, no-answer and failed are retried with exponential backoff (base, 2x, 4x, capped at a
    day); an answered call, a voicemail or a cancelled call is final.
    """
    if result not in RETRYABLE_RESULTS or attempts >= max_attempts:
        return None
    delay = min(base_s * (2 ** max(0, attempts - 1)), 86_400.0)
    return now + delay
