"""Call cost from usage and the operator's rates."""

from __future__ import annotations

import pytest

from app.config import ConfigError, Settings
from app.core.records import Usage
from app.ops.pricing import Rates, call_cost, rates_from, usage_from_row

USAGE = Usage(llm_input_tokens=420, llm_output_tokens=60, stt_seconds=9.5, tts_characters=120)


def test_no_rates_means_unknown_not_zero() -> None:
    assert call_cost(Rates(), USAGE, 61.0, "twilio") is None


def test_each_rate_adds_its_part() -> None:
    rates = Rates(telephony_per_min=0.0085, stt_per_min=0.0043, llm_input_per_mtok=1.0,
                  llm_output_per_mtok=5.0, tts_per_1k_chars=0.3)
    expected = 2 * 0.0085 + 9.5 / 60 * 0.0043 + 420e-6 + 60 * 5e-6 + 0.12 * 0.3
    assert call_cost(rates, USAGE, 61.0, "twilio") == pytest.approx(expected, abs=1e-6)
    # web calls carry no telephony charge; whole minutes are billed for phone calls
    assert call_cost(rates, USAGE, 61.0, "webrtc") == pytest.approx(expected - 0.017, abs=1e-6)
    assert call_cost(Rates(telephony_per_min=0.01), Usage(), 60.0, "twilio") == 0.01


def test_rates_come_from_settings() -> None:
    ops = Settings.from_env({"PRICE_LLM_INPUT_PER_MTOK": "3", "PRICE_TTS_PER_1K_CHARS": "0"}).ops
    rates = rates_from(ops)
    assert rates.llm_input_per_mtok == 3.0 and rates.tts_per_1k_chars == 0.0
    assert rates.stt_per_min is None and rates.any
    with pytest.raises(ConfigError, match="PRICE_STT_PER_MIN"):
        Settings.from_env({"PRICE_STT_PER_MIN": "cheap"})


def test_stored_usage_round_trips() -> None:
    stored = {"llm_input_tokens": 420, "llm_output_tokens": 60, "stt_seconds": 9.5,
              "tts_characters": 120, "something_new": 1}
    assert usage_from_row(stored) == USAGE
    assert usage_from_row(None) == Usage()


def test_cached_prompt_reads_have_their_own_rate() -> None:
    # Claude reports cache reads apart from input tokens (cache writes are counted as input).
    usage = Usage(llm_input_tokens=1_000, llm_cached_tokens=200_000, llm_output_tokens=50)
    rates = Rates(llm_input_per_mtok=3.0, llm_output_per_mtok=15.0, llm_cached_per_mtok=0.3)
    expected = 1_000 * 3e-6 + 50 * 15e-6 + 200_000 * 0.3e-6
    assert call_cost(rates, usage, 30.0, "webrtc") == pytest.approx(expected, abs=1e-9)
    # without the rate the reads are not priced (and nothing else changes)
    unpriced = Rates(llm_input_per_mtok=3.0, llm_output_per_mtok=15.0)
    assert call_cost(unpriced, usage, 30.0, "webrtc") == pytest.approx(expected - 0.06, abs=1e-9)
    ops = Settings.from_env({"PRICE_LLM_CACHED_PER_MTOK": "0.3"}).ops
    assert rates_from(ops) == Rates(llm_cached_per_mtok=0.3) and rates_from(ops).any
    assert usage_from_row({"llm_cached_tokens": 200_000}).llm_cached_tokens == 200_000
