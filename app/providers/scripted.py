"""A deterministic receptionist: the offline ``LanguageModel``.

It books, moves and cancels dental appointments and answers opening-hours questions, asking for
whatever is missing (day, time, name) and confirming before it acts. It keeps no state of its
own: every request replays the conversation (``request.messages``) through ``step`` to rebuild
where the call stands, then ``reply`` says the next thing. Our own earlier questions are
recognised from what the caller actually heard (an interrupted message is cut to that), so a
question cut off by barge-in was not asked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Literal

from app.core.providers import LlmEvent, LlmRequest, LlmUsage, Message, TextDelta, ToolCall
from app.providers.scripted_parse import (
    HOURS_SUMMARY,
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

Intent = Literal["book", "move", "cancel"]

# Markers of our own questions, matched in the previous assistant message.
ASK_CONFIRM = "Shall I"
ASK_ANYTHING_ELSE = "anything else"
ASK_NAME = "your name"
ASK_TIME = "What time"

_CANCEL = re.compile(r"\bcancel")
_MOVE = re.compile(
    r"\b(move|moving|reschedul\w*|re schedule|change|postpone|push (it|my appointment) back|"
    r"different (day|time))\b"
)
# "look an appointment" / "look for": how tiny.en hears synthetic "book an appointment".
_BOOK = re.compile(
    r"\b(book\w*|make an appointment|schedule|set up an appointment|see (the|a) dentist|"
    r"check ?up|cleaning|appointment|look (an|a|for)|come in)\b"
)
_HOURS = re.compile(r"\b(hours|open\w*|close|closing|closed)\b")
_GOODBYE = re.compile(r"\b(bye|goodbye|good bye|hang up)\b")
_DONE = re.compile(
    r"\b(that's all|that is all|that's it|that is it|nothing else|no thanks|no thank you|"
    r"i'm done|i am done|all good|that's everything)\b"
)
_THANKS = re.compile(r"^(ok |okay |great |perfect )?(thank you|thanks)( so much| very much)?$")


@dataclass(frozen=True, slots=True)
class State:
    """Where the call stands after the caller's latest words."""

    intent: Intent | None = None
    day: Day | None = None
    time: Time | None = None
    name: str | None = None
    # one-shot facts about the latest caller turn, for ``reply``
    outcome: Literal["booked", "moved", "cancelled", "declined"] | None = None
    done_when: str = ""  # what was just booked/moved/cancelled, to say it back
    hours: Day | Literal["all"] | None = None
    problem: str | None = None
    goodbye: bool = False
    thanks: bool = False
    more: bool = False  # "yes" to "anything else?"
    not_understood: bool = False


def _when(day: Day | None, time: Time | None, after_to: bool = False) -> str:
    parts = [day.label.removeprefix("on ") if after_to else day.label] if day else []
    if time:
        parts.append(f"at {time.spoken()}")
    return " ".join(parts)


def step(state: State, content: str, asked: str, today: dt.date) -> State:
    """Fold one caller message into the state. ``asked``: our previous message, as heard."""
    s = replace(
        state, outcome=None, done_when="", hours=None, problem=None, thanks=False, more=False,
        not_understood=False,
    )  # fmt: skip
    confirming = ASK_CONFIRM in asked
    digits = keypad_digits(content)
    if digits is not None:
        # Keypad: 1 confirms, 2 declines (the confirmation question says so).
        if confirming and digits[:1] in {"1", "2"}:
            return _confirm(s, digits[0] == "1")
        return replace(s, not_understood=True)

    text = normalise(content)
    answer = yes_or_no(text)
    intent = _intent(text)
    if _GOODBYE.search(text) or (not confirming and not intent and _DONE.search(text)):
        return replace(s, goodbye=True)
    if ASK_ANYTHING_ELSE in asked and answer is not None and not intent:
        return replace(s, goodbye=True) if answer is False else replace(s, more=True)

    day = parse_day(text, today)
    time = parse_time(text, bare=ASK_TIME in asked or confirming)
    name = parse_name(content, bare=ASK_NAME in asked)
    if _HOURS.search(text) and not intent:
        s = replace(s, hours=day or "all")
        day = None  # "are you open on Saturday?" asks about Saturday, it books nothing
    if intent == "cancel" or (intent and s.intent is None):
        s = replace(s, intent=intent, day=None, time=None)
    elif s.intent is None and (day or time) and s.hours is None:
        s = replace(s, intent="book")  # "tomorrow at ten, please" is a booking
    changed = bool(day and day != s.day or time and time != s.time)
    s = replace(s, day=day or s.day, time=time or s.time, name=name or s.name)

    if s.intent in ("book", "move") and s.day is not None:
        if not within_hours(s.day, None):
            s = replace(s, problem=f"Sorry, we're closed {s.day.label}.", day=None, time=None)
        elif not within_hours(s.day, s.time):
            problem = f"Sorry, that's outside our hours. {hours_for(s.day)}"
            s = replace(s, problem=problem, time=None)
    if confirming and not changed and answer is not None and s.problem is None:
        return _confirm(s, answer)
    understood = s.intent is not None or s.hours is not None or name or intent or changed
    if not understood:
        if _THANKS.match(text):
            return replace(s, thanks=True)
        return replace(s, not_understood=True)
    return s


def _intent(text: str) -> Intent | None:
    if _CANCEL.search(text):
        return "cancel"
    if _MOVE.search(text):
        return "move"
    if _BOOK.search(text):
        return "book"
    return None


def _confirm(s: State, yes: bool) -> State:
    if s.intent is None or s.day is None:
        return replace(s, not_understood=True)
    if not yes:
        return replace(s, outcome="declined")
    outcome = {"book": "booked", "move": "moved", "cancel": "cancelled"}[s.intent]
    # Done: forget the appointment details; the name stays for anything else they need.
    return replace(
        s, outcome=outcome, done_when=_when(s.day, s.time), intent=None, day=None, time=None
    )  # type: ignore[arg-type]


def next_question(s: State) -> str:
    if s.intent == "cancel":
        if s.day is None:
            return "Which day is the appointment you'd like to cancel?"
        if s.name is None:
            return "Can I have your name, please?"
        return (
            f"Shall I cancel your appointment {_when(s.day, s.time)}, {s.name}? "
            "Say yes, or press 1 to confirm."
        )
    if s.day is None:
        return (
            "What day would you like to move it to?"
            if s.intent == "move"
            else "What day would you like to come in?"
        )
    if s.time is None:
        return f"What time {s.day.label} works for you?"
    if s.name is None:
        return "Can I have your name, please?"
    when = _when(s.day, s.time)
    if s.intent == "move":
        when = _when(s.day, s.time, after_to=True)
        return f"Shall I move your appointment to {when}, {s.name}? Say yes, or press 1."
    return f"So that's an appointment {when} for {s.name}. Shall I book it? Say yes, or press 1."


def reply(s: State, business: str) -> tuple[str, bool]:
    """The agent's next words, and whether the call should end after them."""
    if s.goodbye:
        return f"Thank you for calling {business}. Goodbye!", True
    parts: list[str] = []
    if s.outcome == "declined":
        return "No problem. What would you like to change?", False
    if s.outcome == "booked":
        parts.append(f"You're all set{_for(s)}: you're booked {s.done_when}.")
    elif s.outcome == "moved":
        parts.append(f"Done{_for(s)}. Your appointment is now {s.done_when}.")
    elif s.outcome == "cancelled":
        parts.append(f"Done{_for(s)}. Your appointment {s.done_when} is cancelled.")
    if s.hours == "all":
        parts.append(HOURS_SUMMARY)
    elif s.hours is not None:
        parts.append(hours_for(s.hours))
    if s.problem:
        parts.append(s.problem)
    if s.intent is not None:
        parts.append(next_question(s))
    elif s.more:
        parts.append("Sure, what can I help you with?")
    elif s.thanks:
        parts.append("You're welcome! Is there anything else I can help you with?")
    elif s.not_understood:
        parts.append(
            "Sorry, I didn't catch that. I can book, move or cancel an appointment, "
            "or tell you our opening hours. What would you like to do?"
        )
    else:
        parts.append("Is there anything else I can help you with?")
    return " ".join(parts), False


def _for(s: State) -> str:
    return f", {s.name}" if s.name else ""


def replay(messages: tuple[Message, ...], today: dt.date) -> State:
    """Rebuild the conversation state from the whole history."""
    state = State()
    asked = ""
    for message in messages:
        if message.role == "assistant":
            asked = message.content
        elif message.content.strip():
            state = step(state, message.content, asked, today)
            asked = ""
    return state


def _tokens(text: str) -> int:
    return round(len(text.split()) * 1.3)  # ~1.3 tokens per English word


class ScriptedAgent:
    """``LanguageModel`` that needs no model: deterministic, instant, offline."""

    name = "scripted"

    def __init__(
        self,
        business: str = "Sunrise Dental",
        today: Callable[[], dt.date] = dt.date.today,
        words_per_delta: int = 4,
    ) -> None:
        self.business = business
        self.today = today
        self.words_per_delta = words_per_delta

    def respond(self, request: LlmRequest) -> tuple[str, bool]:
        return reply(replay(request.messages, self.today()), self.business)

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmEvent]:
        text, end_call = self.respond(request)
        words = text.split(" ")
        n = self.words_per_delta
        for i in range(0, len(words), n):
            piece = " ".join(words[i : i + n])
            yield TextDelta(piece if i + n >= len(words) else piece + " ")
            await asyncio.sleep(0)  # let the consumer start speaking the first words
        if end_call:
            turn = sum(1 for m in request.messages if m.role == "user")
            yield ToolCall(id=f"end_call_{turn}", name="end_call", arguments={})
        prompt = request.system + " " + " ".join(m.content for m in request.messages)
        yield LlmUsage(input_tokens=_tokens(prompt), output_tokens=_tokens(text))
