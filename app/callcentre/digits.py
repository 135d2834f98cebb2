"""Keypad field collection ("enter your account number followed by #"), as a state machine.

Pure: ``feed(digit, now)`` and ``expire(now)`` return what to hand to the conversation, and
``deadline`` says when to call ``expire``. The session's own keypad buffer flushes after two
seconds of silence, too short for someone reading a card: while a field is being collected the
digits are held here (longer inter-digit timeout, a length, a terminator) and released at once,
ending with ``#`` so the session passes the whole field to the model as one turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KEYS = frozenset("0123456789*#")


@dataclass(frozen=True, slots=True)
class FieldRequest:
    name: str
    max_digits: int = 20
    terminator: str = "#"
    inter_digit_timeout_s: float = 5.0
    first_digit_timeout_s: float = 15.0  # reading the card out of the wallet takes a while


@dataclass(frozen=True, slots=True)
class FieldResult:
    name: str
    digits: str
    ended_by: str  # "terminator" | "length" | "timeout"

    def keys(self) -> list[str]:
        """The key presses to hand on; a final ``#`` releases the session's buffer at once."""
        return [*self.digits, "#"]


@dataclass(slots=True)
class DigitCollector:
    request: FieldRequest | None = None
    _digits: list[str] = field(default_factory=list)
    deadline: float | None = None

    @property
    def active(self) -> bool:
        return self.request is not None

    def start(self, request: FieldRequest, now: float) -> None:
        self.request = request
        self._digits = []
        self.deadline = now + request.first_digit_timeout_s

    def feed(self, digit: str, now: float) -> FieldResult | None:
        req = self.request
        if req is None or digit not in KEYS:
            return None
        if digit == req.terminator:
            return self._done("terminator")
        if digit in "*#":  # the other symbol: not part of a number field
            self.deadline = now + req.inter_digit_timeout_s
            return None
        self._digits.append(digit)
        if len(self._digits) >= req.max_digits:
            return self._done("length")
        self.deadline = now + req.inter_digit_timeout_s
        return None

    def expire(self, now: float) -> FieldResult | None:
        if self.request is None or self.deadline is None or now < self.deadline:
            return None
        return self._done("timeout")

    def cancel(self) -> None:
        self.request, self._digits, self.deadline = None, [], None

    def _done(self, ended_by: str) -> FieldResult:
        assert self.request is not None
        result = FieldResult(self.request.name, "".join(self._digits), ended_by)
        self.cancel()
        return result
