"""How the scripted receptionist reads recogniser output: table-driven, including the mistakes
tiny.en made on synthetic phone audio ("1030", "10-30", "3 p.m.", "look an appointment")."""

from __future__ import annotations

import datetime as dt

import pytest

from app.providers.scripted_parse import (
    Day,
    Time,
    hours_for,
    keypad_digits,
    normalise,
    parse_day,
    parse_name,
    parse_time,
    within_hours,
    yes_or_no,
)

WEDNESDAY = dt.date(2026, 11, 18)


@pytest.mark.parametrize(
    ("text", "bare", "expected"),
    [
        ("I'd like to book an appointment tomorrow at ten.", False, Time(10)),
        ("I'd like to book an appointment tomorrow at 10.", False, Time(10)),
        ("10", True, Time(10)),
        ("ten", True, Time(10)),
        ("Maybe 11?", True, Time(11)),
        ("Is 3 okay?", True, Time(15)),
        ("at 10:30 please", False, Time(10, 30)),
        ("at 10.30", False, Time(10, 30)),
        ("Next Monday, 1030.", False, Time(10, 30)),
        ("Next Monday, 10-30.", False, Time(10, 30)),
        ("Can I look for next Monday at 10 30?", False, Time(10, 30)),
        ("ten thirty", False, Time(10, 30)),
        ("at nine fifteen", False, Time(9, 15)),
        ("ten forty-five", False, Time(10, 45)),
        ("Friday at 3 pm", False, Time(15)),
        ("Can I move my appointment to Friday at 3 p.m.?", False, Time(15)),
        ("3 PM", False, Time(15)),
        ("3pm", False, Time(15)),
        ("9 a.m. on Saturday", False, Time(9)),
        ("three in the afternoon", False, Time(15)),
        ("at 8 in the evening", False, Time(20)),
        ("at 8 in the morning", False, Time(8)),
        ("at 2", False, Time(14)),
        ("around noon", False, Time(12)),
        ("midday", False, Time(12)),
        ("half past four", False, Time(16, 30)),
        ("quarter past nine", False, Time(9, 15)),
        ("quarter to nine", False, Time(8, 45)),
        ("eleven o'clock", False, Time(11)),
        ("at 17:00", False, Time(17)),
        ("move it from 10 to 11", False, Time(11)),
        ("Actually make it 11", False, Time(11)),
        ("on the 10th", False, None),
        ("the 3rd at 4", False, Time(16)),
        ("I'd like to book an appointment.", False, None),
        ("My name is John Smith.", False, None),
        ("one", False, None),  # a lone number is an hour only when we asked for a time
    ],
)
def test_times(text: str, bare: bool, expected: Time | None) -> None:
    assert parse_time(normalise(text), bare=bare) == expected


@pytest.mark.parametrize(
    ("time", "spoken"),
    [
        (Time(10), "10 am"),
        (Time(10, 30), "10:30 am"),
        (Time(15), "3 pm"),
        (Time(12), "noon"),
        (Time(12, 30), "12:30 pm"),
        (Time(9, 5), "9:05 am"),
    ],
)
def test_times_are_said_back(time: Time, spoken: str) -> None:
    assert time.spoken() == spoken


@pytest.mark.parametrize(
    ("text", "date", "label"),
    [
        ("tomorrow at 10", dt.date(2026, 11, 19), "tomorrow"),
        ("today if possible", WEDNESDAY, "today"),
        ("the day after tomorrow", dt.date(2026, 11, 20), "the day after tomorrow"),
        ("on Friday", dt.date(2026, 11, 20), "on Friday"),
        ("Friday", dt.date(2026, 11, 20), "on Friday"),
        ("Next Monday, 1030.", dt.date(2026, 11, 23), "next Monday"),
        ("Wednesday", dt.date(2026, 11, 25), "on Wednesday"),  # said on a Wednesday: next week
        ("Tuesdays are best", dt.date(2026, 11, 24), "on Tuesday"),
        ("on the 5th", dt.date(2026, 12, 5), "on the 5th"),
        ("the fifth", dt.date(2026, 12, 5), "on the 5th"),
        ("the twenty first", dt.date(2026, 11, 21), "on the 21st"),
        ("the 18th", WEDNESDAY, "on the 18th"),
        ("December 3rd", dt.date(2026, 12, 3), "on December 3rd"),
        ("the 2nd of January", dt.date(2027, 1, 2), "on January 2nd"),
        ("the 31st", dt.date(2026, 12, 31), "on the 31st"),  # November has no 31st
        ("from Monday to Tuesday", dt.date(2026, 11, 24), "on Tuesday"),
    ],
)
def test_days(text: str, date: dt.date, label: str) -> None:
    assert parse_day(normalise(text), WEDNESDAY) == Day(date, label)


@pytest.mark.parametrize(
    "text", ["I'd like to book an appointment", "at 10 am", "the 45th", "Yes, that's right."]
)
def test_no_day(text: str) -> None:
    assert parse_day(normalise(text), WEDNESDAY) is None


@pytest.mark.parametrize(
    ("text", "bare", "name"),
    [
        ("My name is John Smith.", False, "John Smith"),
        ("my name is john", False, "John"),
        ("It's Maria Garcia", False, "Maria Garcia"),
        ("This is Bob.", False, "Bob"),
        ("Hi, I'm Sam, I'd like to book", False, "Sam"),
        ("I'm calling to book an appointment", False, None),
        ("I'd like to book an appointment tomorrow at 10.", False, None),
        ("Maria Garcia.", True, "Maria Garcia"),
        ("Yes, it's Li.", True, "Li"),
        ("Sure. O'Brien.", True, "O'Brien"),
        ("tomorrow at 10", True, None),
        ("Maria Garcia.", False, None),
    ],
)
def test_names(text: str, bare: bool, name: str | None) -> None:
    assert parse_name(text, bare=bare) == name


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("Yes, that's right.", True),
        ("yeah", True),
        ("Sure, go ahead.", True),
        ("Sounds good", True),
        ("Okay.", True),
        ("No.", False),
        ("Nope, that's wrong", False),
        ("No, that's all. Goodbye.", False),
        ("Actually, not quite", False),
        ("No, yes", False),
        ("Hmm", None),
        ("Tomorrow at 10", None),
    ],
)
def test_yes_or_no(text: str, answer: bool | None) -> None:
    assert yes_or_no(normalise(text)) is answer


@pytest.mark.parametrize(
    ("content", "digits"),
    [
        ("[keypad: 1]", "1"),
        ("[keypad: 1 2 3]", "123"),
        ("[Keypad: * 0 #]", "*0#"),
        ("press 1", None),
        ("1", None),
    ],
)
def test_keypad(content: str, digits: str | None) -> None:
    assert keypad_digits(content) == digits


@pytest.mark.parametrize(
    ("day", "time", "open_"),
    [
        (dt.date(2026, 11, 19), Time(8), True),  # Thursday 8 am: opening time
        (dt.date(2026, 11, 19), Time(17, 30), True),  # last half-hour slot
        (dt.date(2026, 11, 19), Time(18), False),
        (dt.date(2026, 11, 19), Time(7, 30), False),
        (dt.date(2026, 11, 21), Time(9), True),  # Saturday
        (dt.date(2026, 11, 21), Time(13), False),
        (dt.date(2026, 11, 21), None, True),
        (dt.date(2026, 11, 22), None, True),  # Sunday
        (dt.date(2026, 11, 22), Time(14), False),
    ],
)
def test_opening_hours(day: dt.date, time: Time | None, open_: bool) -> None:
    assert within_hours(Day(day, "that day"), time) is open_


def test_hours_for_a_day() -> None:
    assert hours_for(Day(dt.date(2026, 11, 21), "on Saturday")) == (
        "On Saturday we're open from 9 am to 1 pm."
    )
    assert hours_for(Day(dt.date(2026, 11, 19), "tomorrow")) == (
        "Tomorrow we're open from 8 am to 6 pm."
    )
    assert hours_for(Day(dt.date(2026, 11, 22), "on Sunday")) == (
        "On Sunday we're open from 9 am to 1 pm."
    )
