"""What a call cost: provider usage and call length times the operator's own rates.

Rates change and differ per account, so none is built in: each comes from a setting
(``PRICE_*`` in ``.env.example``). With no rate set at all a call's cost is unknown (``None``),
never a guess. Pure: usage in, dollars out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from app.core.records import Usage


@dataclass(frozen=True, slots=True)
class Rates:
    telephony_per_min: float | None = None  # Twilio voice, per started minute, phone calls only
    stt_per_min: float | None = None  # per minute of audio sent to the recogniser
    llm_input_per_mtok: float | None = None  # per million input tokens
    llm_output_per_mtok: float | None = None  # per million output tokens
    # per million prompt-cache read tokens; they are not in the input count (cache writes are)
    llm_cached_per_mtok: float | None = None
    tts_per_1k_chars: float | None = None  # per thousand characters synthesised

    @property
    def any(self) -> bool:
        return any(
            v is not None
            for v in (
                self.telephony_per_min,
                self.stt_per_min,
                self.llm_input_per_mtok,
                self.llm_output_per_mtok,
                self.llm_cached_per_mtok,
                self.tts_per_1k_chars,
            )
        )


def call_cost(rates: Rates, usage: Usage, duration_s: float | None, transport: str) -> float | None:
    if not rates.any:
        return None
    cost = 0.0
    if rates.telephony_per_min is not None and transport == "twilio" and duration_s:
        cost += math.ceil(duration_s / 60.0) * rates.telephony_per_min  # Twilio bills whole minutes
    if rates.stt_per_min is not None:
        cost += usage.stt_seconds / 60.0 * rates.stt_per_min
    if rates.llm_input_per_mtok is not None:
        cost += usage.llm_input_tokens / 1e6 * rates.llm_input_per_mtok
    if rates.llm_output_per_mtok is not None:
        cost += usage.llm_output_tokens / 1e6 * rates.llm_output_per_mtok
    if rates.llm_cached_per_mtok is not None:
        cost += usage.llm_cached_tokens / 1e6 * rates.llm_cached_per_mtok
    if rates.tts_per_1k_chars is not None:
        cost += usage.tts_characters / 1000.0 * rates.tts_per_1k_chars
    return round(cost, 6)


def usage_from_row(data: dict[str, Any] | None) -> Usage:
    """The ``usage`` JSON of a stored call back into ``Usage`` (unknown keys ignored)."""
    data = data or {}
    return Usage(
        llm_input_tokens=int(data.get("llm_input_tokens", 0) or 0),
        llm_output_tokens=int(data.get("llm_output_tokens", 0) or 0),
        llm_cached_tokens=int(data.get("llm_cached_tokens", 0) or 0),
        stt_seconds=float(data.get("stt_seconds", 0) or 0),
        tts_characters=int(data.get("tts_characters", 0) or 0),
        llm_wasted_input_tokens=int(data.get("llm_wasted_input_tokens", 0) or 0),
        llm_wasted_output_tokens=int(data.get("llm_wasted_output_tokens", 0) or 0),
    )


def rates_from(ops: Any) -> Rates:
    """From ``OpsSettings`` (``PRICE_*``)."""
    return Rates(
        telephony_per_min=ops.price_telephony_per_min,
        stt_per_min=ops.price_stt_per_min,
        llm_input_per_mtok=ops.price_llm_input_per_mtok,
        llm_output_per_mtok=ops.price_llm_output_per_mtok,
        llm_cached_per_mtok=ops.price_llm_cached_per_mtok,
        tts_per_1k_chars=ops.price_tts_per_1k_chars,
    )


def pricer(rates: Rates) -> Any:
    """For ``app.ops.metrics.Metrics``: ``(usage, seconds, call) -> dollars | None``."""
    return lambda usage, seconds, call: call_cost(rates, usage, seconds, call.transport)
