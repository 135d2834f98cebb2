"""Understanding a caller's words, as a recogniser writes them: days, times, names, yes/no.

Pure functions over strings. Input is speech-to-text output, so the same time arrives as "ten",
"10", "10:30", "10.30", "1030", "10-30", "ten thirty", "3 p.m.", "3 PM" or "3pm", and small
mistakes are normal ("look an appointment" for "book an appointment").
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip

# Opening hours per weekday (Monday = 0): (open hour, close hour). Open every day, so that
# "tomorrow at ten" books whatever day the demo runs on; a day missing here is a closed day.
HOURS: dict[int, tuple[int, int]] = {0: (8, 18), 1: (8, 18), 2: (8, 18), 3: (8, 18), 4: (8, 18),
                                     5: (9, 13), 6: (9, 13)}  # fmt: skip
HOURS_OPEN = "We're open Monday to Friday from 8 am to 6 pm, and weekends from 9 am to 1 pm."
HOURS_SUMMARY = HOURS_OPEN

_UNITS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50,
}  # fmt: skip
_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13,
    "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
    "nineteenth": 19, "twentieth": 20, "thirtieth": 30,
}  # fmt: skip


def normalise(text: str) -> str:
    """Lower case, "p.m."/"P.M." -> "pm", curly quotes straightened, other punctuation spaced."""
    t = text.lower().replace("\u2019", "'")
    t = re.sub(r"\b([ap])\.\s?m\b\.?", r"\1m", t)
    t = re.sub(r"(\d)\s*([ap])m\b", r"\1 \2m", t)
    t = re.sub(r"[^\w\s':.\-]", " ", t)  # keep ' : . - for "that's", "10:30", "10.30", "10-30"
    t = re.sub(r"(?<!\d)[.\-:]|[.\-:](?!\d)", " ", t)  # but only between digits
    return re.sub(r"\s+", " ", t).strip()


# --------------------------------------------------------------------------- days


@dataclass(frozen=True, slots=True)
class Day:
    date: dt.date
    label: str  # how to say it back: "tomorrow", "on Monday", "next Monday", "on the 5th"

    @property
    def weekday(self) -> int:
        return self.date.weekday()


def _ordinal_suffix(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _ordinal_words_to_digits(t: str) -> str:
    def repl(m: re.Match[str]) -> str:
        tens = {"twenty": 20, "thirty": 30}.get(m.group(1) or "", 0)
        n = tens + _ORDINALS[m.group(2)]
        return f"{n}{_ordinal_suffix(n)}"

    words = "|".join(_ORDINALS)
    return re.sub(rf"\b(?:(twenty|thirty)[\s-])?({words})\b", repl, t)


def _day_of_month(today: dt.date, day: int, month: int | None) -> dt.date | None:
    """The next date (from today) with this day of month, in ``month`` if given."""
    for add in range(0, 14):
        y, m = divmod(today.month - 1 + add, 12)
        year, mon = today.year + y, m + 1
        if month is not None and mon != month:
            continue
        try:
            candidate = dt.date(year, mon, day)
        except ValueError:
            continue
        if candidate >= today:
            return candidate
    return None


_WEEKDAY_RE = re.compile(rf"\b(next|this|on|coming)?\s*({'|'.join(WEEKDAYS)})s?\b")
_MONTH_RE = "|".join(MONTHS)
_DOM_RE = re.compile(
    rf"\b(?:({_MONTH_RE})\s+(?:the\s+)?(\d{{1,2}})(?:st|nd|rd|th)?"
    rf"|(?:the\s+)?(\d{{1,2}})(?:st|nd|rd|th)(?:\s+of\s+({_MONTH_RE}))?)\b"
)


def find_days(text: str, today: dt.date) -> list[tuple[int, int, Day]]:
    """Every day mentioned, as (start, end, Day) over ``_ordinal_words_to_digits(text)``."""
    t = _ordinal_words_to_digits(text)
    found: list[tuple[int, int, Day]] = []
    for m in re.finditer(r"\b(day after tomorrow|today|tomorrow)\b", t):
        offset = {"today": 0, "tomorrow": 1}.get(m.group(1), 2)
        label = "the day after tomorrow" if offset == 2 else m.group(1)
        found.append((m.start(), m.end(), Day(today + dt.timedelta(days=offset), label)))
    for m in _WEEKDAY_RE.finditer(t):
        wd = WEEKDAYS.index(m.group(2))
        ahead = (wd - today.weekday()) % 7 or 7  # "Monday" said on a Monday means next week's
        name = m.group(2).capitalize()
        label = f"next {name}" if m.group(1) == "next" else f"on {name}"
        found.append((m.start(), m.end(), Day(today + dt.timedelta(days=ahead), label)))
    for m in _DOM_RE.finditer(t):
        month_name = m.group(1) or m.group(4)
        n = int(m.group(2) or m.group(3))
        month = MONTHS.index(month_name) + 1 if month_name else None
        date = _day_of_month(today, n, month) if 1 <= n <= 31 else None
        if date is None:
            continue
        label = f"on the {n}{_ordinal_suffix(n)}"
        if month_name:
            label = f"on {month_name.capitalize()} {n}{_ordinal_suffix(n)}"
        found.append((m.start(), m.end(), Day(date, label)))
    # "next Monday the 5th" etc.: keep the longest match at each place
    found.sort(key=lambda f: (f[0], -(f[1] - f[0])))
    kept: list[tuple[int, int, Day]] = []
    for f in found:
        if kept and f[0] < kept[-1][1]:
            continue
        kept.append(f)
    return kept


def parse_day(text: str, today: dt.date) -> Day | None:
    """The last day mentioned ("from Monday to Tuesday" means Tuesday)."""
    days = find_days(text, today)
    return days[-1][2] if days else None


# --------------------------------------------------------------------------- times


@dataclass(frozen=True, slots=True)
class Time:
    hour: int  # 0-23
    minute: int = 0

    def spoken(self) -> str:
        if (self.hour, self.minute) == (12, 0):
            return "noon"
        h = self.hour % 12 or 12
        suffix = "am" if self.hour < 12 else "pm"
        return f"{h} {suffix}" if self.minute == 0 else f"{h}:{self.minute:02d} {suffix}"


def _number_words_to_digits(t: str) -> str:
    t = re.sub(r"\bforty[\s-]five\b", "45", t)
    words = "|".join(_UNITS)
    return re.sub(rf"\b({words})\b", lambda m: str(_UNITS[m.group(1)]), t)


def _resolve(hour: int, minute: int, period: str | None, text: str) -> Time | None:
    if not (0 <= minute < 60) or not (0 <= hour <= 23):
        return None
    if hour > 12:
        return Time(hour, minute)
    if period is None:
        if re.search(r"\bmorning\b", text):
            period = "am"
        elif re.search(r"\b(afternoon|evening|tonight)\b", text):
            period = "pm"
    if period == "am":
        return Time(0 if hour == 12 else hour, minute)
    if period == "pm":
        return Time(hour if hour == 12 else hour + 12, minute)
    # No am/pm: a clinic open 8 am to 6 pm means "3" is 3 pm and "10" is 10 am.
    return Time(hour + 12 if 1 <= hour <= 7 else hour, minute)


_P = r"(?:\s*(am|pm)\b)?"
_LEAD = r"\b(?:at|around|about|by|after|before|to|make it|say)"  # "at 10", "make it 11"
_TIME_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(noon|midday|lunchtime)\b"), "noon"),
    (re.compile(r"\bhalf past (\d{1,2})\b" + _P), "half"),
    (re.compile(r"\bquarter past (\d{1,2})\b" + _P), "qpast"),
    (re.compile(r"\bquarter to (\d{1,2})\b" + _P), "qto"),
    (re.compile(r"(?<![\d.:])(\d{1,2})[:.\- ](\d{2})(?![\d]|st|nd|rd|th)" + _P), "hm"),
    (re.compile(r"(?<![\d.:])(\d{1,2})(\d{2})(?!\d|st|nd|rd|th)" + _P), "hm"),  # "1030"
    (re.compile(r"(?<![\d.:])(\d{1,2})\s*(am|pm)\b"), "hp"),
    (re.compile(r"(?<![\d.:])(\d{1,2})\s*o'?clock\b" + _P), "h"),
    (re.compile(r"(?<![\d.:])(\d{1,2}) (?:in the|this) (morning|afternoon|evening)\b"), "hday"),
    (re.compile(_LEAD + r"\s+(\d{1,2})(?![\d:]|st|nd|rd|th)" + _P), "h"),
)
_BARE_HOUR = re.compile(r"(?<![\d.:])(\d{1,2})(?![\d:]|st|nd|rd|th)" + _P)


def parse_time(text: str, bare: bool = False) -> Time | None:
    """The last time of day mentioned in normalised ``text``.

    ``bare``: we just asked "what time?", so a lone number ("ten", "maybe 11") is an hour.
    """
    t = _number_words_to_digits(text)
    for start, end, _day in find_days(t, dt.date(2000, 1, 1)):  # "the 10th" is not a time
        t = t[:start] + " " * (end - start) + t[end:]
    found: list[tuple[int, Time]] = []
    for pattern, kind in _TIME_PATTERNS:
        for m in pattern.finditer(t):
            time = _match_time(m, kind, t)
            if time is not None:
                found.append((m.start(), time))
                t = t[: m.start()] + " " * (m.end() - m.start()) + t[m.end() :]
    if not found and bare:
        for m in _BARE_HOUR.finditer(t):
            time = _match_time(m, "h", t)
            if time is not None and 1 <= int(m.group(1)) <= 12:
                found.append((m.start(), time))
    return max(found, key=lambda f: f[0])[1] if found else None


def _match_time(m: re.Match[str], kind: str, text: str) -> Time | None:
    if kind == "noon":
        return Time(12, 0)
    g = m.groups()
    if kind == "hm":
        return _resolve(int(g[0]), int(g[1]), g[2], text)
    if kind == "hp":
        return _resolve(int(g[0]), 0, g[1], text)
    if kind == "hday":
        return _resolve(int(g[0]), 0, "am" if g[1] == "morning" else "pm", text)
    hour, period = int(g[0]), g[1]
    if not 1 <= hour <= 23:
        return None
    if kind == "half":
        return _resolve(hour, 30, period, text)
    if kind == "qpast":
        return _resolve(hour, 15, period, text)
    if kind == "qto":
        return _resolve(hour - 1 or 12, 45, period, text)
    return _resolve(hour, 0, period, text)


def within_hours(day: Day, time: Time | None) -> bool:
    """Is the clinic open on ``day`` (at ``time``, which must leave room for a visit)?"""
    hours = HOURS.get(day.weekday)
    if hours is None:
        return False
    if time is None:
        return True
    minutes = time.hour * 60 + time.minute
    return hours[0] * 60 <= minutes <= hours[1] * 60 - 30


def hours_for(day: Day) -> str:
    hours = HOURS.get(day.weekday)
    when = day.label[0].upper() + day.label[1:]
    if hours is None:
        return f"Sorry, we're closed {day.label}. {HOURS_OPEN}"
    return f"{when} we're open from {Time(hours[0]).spoken()} to {Time(hours[1]).spoken()}."


# --------------------------------------------------------------------------- names, yes/no


_NOT_NAMES = frozenset(
    "calling looking trying wondering not just sorry good fine here available free going "
    "sure yes yeah no ok okay hi hello thanks thank please it the a an i my name is this "
    "that appointment booking tomorrow today morning afternoon".split()
    + list(WEEKDAYS)
)
_NAME_WORD = r"[A-Z][a-zA-Z'\-]+"
_NAME_INTRO = re.compile(
    rf"\b(?:[Mm]y name is|[Mm]y name's|[Nn]ame is|[Tt]his is|[Ii]t's|[Ii]t is|I'm|I am)\s+"
    rf"({_NAME_WORD}(?:\s+{_NAME_WORD}){{0,2}})"
)
_MY_NAME_LOWER = re.compile(r"\bmy name is\s+([a-z'\-]+(?:\s+[a-z'\-]+)?)")


def _clean_name(words: list[str]) -> str | None:
    kept: list[str] = []
    for w in words:
        if w.lower() in _NOT_NAMES or not re.fullmatch(r"[A-Za-z'\-]+", w):
            break
        kept.append(w[0].upper() + w[1:])
    return " ".join(kept[:3]) or None


def parse_name(text: str, bare: bool = False) -> str | None:
    """A name the caller gave. ``bare``: we just asked for it, so "Maria Garcia." is a name."""
    m = _NAME_INTRO.search(text)
    if m:
        name = _clean_name(m.group(1).split())
        if name:
            return name
    m = _MY_NAME_LOWER.search(text.lower())
    if m:
        return _clean_name(m.group(1).split())
    if bare:
        words = re.sub(r"[^\w\s'\-]", " ", text).split()
        while words and words[0].lower() in {"yes", "yeah", "sure", "ok", "okay", "um", "uh",
                                             "it's", "its", "hi", "oh", "so"}:  # fmt: skip
            words = words[1:]
        if 1 <= len(words) <= 3:
            return _clean_name(words)
    return None


_YES = re.compile(
    r"\b(yes|yeah|yep|yup|sure|correct|right|ok|okay|please do|go ahead|sounds good|perfect|"
    r"great|confirm|absolutely|that works|fine|definitely|of course)\b"
)
_NO = re.compile(r"\b(no|nope|nah|not|don't|wrong|actually|wait)\b")


def yes_or_no(text: str) -> bool | None:
    """True for yes, False for no, None if neither; the first one said wins ("no, yes" = no)."""
    y, n = _YES.search(text), _NO.search(text)
    if y and n:
        return y.start() < n.start()
    return True if y else False if n else None


_KEYPAD = re.compile(r"^\s*\[keypad:\s*([0-9*#\s]*)\]\s*$", re.IGNORECASE)


def keypad_digits(content: str) -> str | None:
    """``"[keypad: 1 2]"`` -> ``"12"``; None if the message is not keypad input."""
    m = _KEYPAD.match(content)
    return re.sub(r"\s+", "", m.group(1)) if m else None
