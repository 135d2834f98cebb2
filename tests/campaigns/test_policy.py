"""Calling hours, retries and throttling rules: pure functions, no clock."""

from __future__ import annotations

import datetime as dt

import pytest

from app.campaigns import policy
from app.config import ConfigError, Settings, parse_hhmm, parse_hours
from app.outbound.retry import retry_at

NINE, EIGHT_PM = 9 * 60, 20 * 60


def utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


def test_calling_hours_are_the_callees_local_time():
    ny = policy.timezones_for("+12125550100")
    la = policy.timezones_for("+14155550100")
    at = utc(2026, 3, 2, 15, 0)  # 10:00 in New York, 07:00 in Los Angeles
    assert policy.within_hours(at, ny, NINE, EIGHT_PM)
    assert not policy.within_hours(at, la, NINE, EIGHT_PM)
    assert policy.next_open(at, la, NINE, EIGHT_PM) == utc(2026, 3, 2, 17, 0)


def test_a_number_spanning_two_zones_uses_the_overlap():
    zones = policy.timezones_for("+19075550100")  # Alaska: Anchorage and Adak
    assert set(zones) == {"America/Anchorage", "America/Adak"}
    at = utc(2026, 3, 2, 18, 30)  # 09:30 Anchorage, 08:30 Adak
    assert not policy.within_hours(at, zones, NINE, EIGHT_PM)
    assert policy.next_open(at, zones, NINE, EIGHT_PM) == utc(2026, 3, 2, 19, 0)


def test_after_closing_the_next_window_is_tomorrow_across_a_dst_change():
    ny = ("America/New_York",)
    # Saturday 7 March 2026, 21:00 EST; clocks go forward on Sunday morning.
    at = utc(2026, 3, 8, 2, 0)
    opens = policy.next_open(at, ny, NINE, EIGHT_PM)
    assert opens == utc(2026, 3, 8, 13, 0)  # 09:00 EDT is 13:00 UTC


def test_windows_that_never_overlap_give_none():
    assert policy.next_open(0.0, ("Asia/Tokyo", "America/New_York"), NINE, 10 * 60) is None


@pytest.mark.parametrize(
    ("result", "attempts", "expected"),
    [("busy", 1, 600.0), ("no-answer", 2, 1200.0), ("failed", 3, None), ("answered", 1, None),
     ("voicemail", 1, None), ("canceled", 1, None)],
)
def test_retry_backoff(result, attempts, expected):
    got = retry_at(result, attempts, max_attempts=3, base_s=600.0, now=1000.0)
    assert got == (None if expected is None else 1000.0 + expected)


def test_throttle_backoff_doubles_and_caps():
    assert [policy.throttle_backoff(n) for n in (1, 2, 3, 10)] == [1.0, 2.0, 4.0, 60.0]


def test_parse_hhmm():
    assert parse_hhmm("09:30") == 570
    with pytest.raises(ValueError, match="HH:MM"):
        parse_hhmm("9am")


@pytest.mark.parametrize("text", ["09:00-20:00", "09:00,20:00", " 09:00 - 20:00 "])
def test_calling_hours_take_one_spelling_everywhere(text):
    assert parse_hours(text) == (NINE, EIGHT_PM)
    settings = Settings.from_env({"CAMPAIGN_CALLING_HOURS": text})
    assert parse_hours(",".join(settings.outbound.campaign_hours)) == (NINE, EIGHT_PM)


@pytest.mark.parametrize("text", ["09:75,20:00", "20:00-09:00", "09:00", "9-5"])
def test_settings_refuse_calling_hours_the_campaigns_would_refuse(text):
    with pytest.raises(ConfigError, match="CAMPAIGN_CALLING_HOURS"):
        Settings.from_env({"CAMPAIGN_CALLING_HOURS": text})
