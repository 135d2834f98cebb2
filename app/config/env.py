"""Reading the environment: the ``.env`` file, typed values with the variable named in every
error, and the small formats several settings share (clock times, networks, E.164)."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping

from telephony.numbers import is_e164


class ConfigError(ValueError):
    """A setting is missing or malformed. The message names the variable."""


DOTENV_FILE = ".env"


def environment(path: str = DOTENV_FILE) -> dict[str, str]:
    """The process environment over the ``.env`` file in the working directory, if any.

    The environment wins, so ``fly secrets`` and a shell export override the file. The file is
    parsed by python-dotenv (quotes, ``export`` prefixes, values with spaces), not by a shell.
    """
    merged: dict[str, str] = {}
    if os.path.isfile(path):
        from dotenv import dotenv_values

        merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    merged.update(os.environ)
    return merged


def parse_hhmm(text: str) -> int:
    """``"09:30"`` -> 570 minutes after midnight. Raises ValueError naming the bad value."""
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit():
        raise ValueError(f"expected HH:MM, got {text!r}")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > 24 * 60:
        raise ValueError(f"expected HH:MM between 00:00 and 24:00, got {text!r}")
    return value


def parse_hours(text: str) -> tuple[int, int]:
    """Calling hours, ``09:00-20:00`` or ``09:00,20:00`` (both spellings everywhere), as
    minutes after midnight. Raises ValueError naming what is wrong."""
    parts = re.split(r"\s*[-,]\s*", text.strip())
    if len(parts) != 2:
        raise ValueError(f"expected START-END like 09:00-20:00, got {text!r}")
    start, end = parse_hhmm(parts[0]), parse_hhmm(parts[1])
    if not start < end:
        raise ValueError(f"calling hours must start before they end, got {text!r}")
    return start, end


class Env:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def str(self, key: str, default: str = "") -> str:
        return self.env.get(key, default).strip()

    def opt(self, key: str) -> str | None:
        value = self.env.get(key, "").strip()
        return value or None

    def int(self, key: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        raw = self.env.get(key, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{key} must be a whole number, got {raw!r}") from None
        return self._range(key, value, lo, hi)

    def float(
        self, key: str, default: float, lo: float | None = None, hi: float | None = None
    ) -> float:
        raw = self.env.get(key, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {raw!r}") from None
        if not math.isfinite(value):  # nan compares false with every bound
            raise ConfigError(f"{key} must be a finite number, got {raw!r}")
        return self._range(key, value, lo, hi)

    def bool(self, key: str, default: bool) -> bool:
        raw = self.env.get(key, "").strip().lower()
        if not raw:
            return default
        if raw in {"1", "true", "yes", "on"}:
            return True
        if raw in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{key} must be true or false, got {raw!r}")

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.str(key, default).lower()
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
        return value

    def list(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        raw = self.env.get(key)
        if raw is None or not raw.strip():
            return default
        return tuple(p.strip() for p in raw.split(",") if p.strip())

    @staticmethod
    def _range(key, value, lo, hi):  # type: ignore[no-untyped-def]
        if lo is not None and value < lo or hi is not None and value > hi:
            raise ConfigError(f"{key} must be between {lo} and {hi}, got {value}")
        return value



def price(e: Env, key: str) -> float | None:
    return e.float(key, 0.0, 0, 1_000_000) if e.opt(key) is not None else None


def e164_or_none(e: Env, key: str) -> str | None:
    value = e.opt(key)
    if value is not None and not is_e164(value):
        raise ConfigError(f"{key} must be an E.164 number like +14155550123")
    return value



def networks(e: Env, key: str) -> tuple[str, ...]:
    out = []
    for item in e.list(key):
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"{key} entries must be IP addresses or CIDRs, got {item!r}") \
                from None
    return tuple(out)


