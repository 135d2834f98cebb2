"""A call session's deadlines, by name: what the runner turns into one ``Tick`` at the earliest."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class Deadlines:
    """Each is a time (the session's clock) or None when not armed."""

    resume: float | None = None  # a paused agent carries on speaking
    endpoint: float | None = None  # the caller's turn is taken as finished
    dtmf: float | None = None  # a keypad entry is sent after a pause between keys
    filler: float | None = None  # "one moment" if the model has not spoken yet
    tool: float | None = None  # "let me check that" if a tool is still running
    giveup: float | None = None  # the model is given up on: an apology, and carry on
    idle: float | None = None  # a silent caller is asked if they are still there
    max: float | None = None  # the call's length limit
    end: float | None = None  # hard stop if a goodbye's mark never comes back

    def next(self) -> float | None:
        armed = [t for f in fields(self) if (t := getattr(self, f.name)) is not None]
        return min(armed) if armed else None
