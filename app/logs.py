"""Structured logs: one JSON line per event, the call id on every line, personal data redacted.

Use ``log = get_logger(__name__)`` and ``log.info("event_name", extra={"fields": {...}})`` or the
``event(log, "name", key=value)`` shorthand. The call id comes from a context variable set by
``bind_call`` (each call's tasks inherit it), so nobody has to pass it around.

Redaction is a last line of defence, applied to every formatted line: phone-number-like digit
runs are masked and registered secrets are replaced. Transcripts must never be logged at all
(log their length instead).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

call_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("call_id", default=None)

_secrets: set[str] = set()
# +E.164, or 7+ digits possibly split by spaces, dots, dashes or parentheses.
_PHONE = re.compile(r"(?<![\w])\+?\d(?:[\s().-]?\d){6,16}(?![\w])")


def register_secret(value: str | None) -> None:
    """Never let this value reach a log line (API keys, auth tokens, DSNs)."""
    if value and len(value) >= 6:
        _secrets.add(value)


def mask_phone(number: str | None) -> str:
    """``+14155550123`` -> ``+1*******23``: enough to tell calls apart, not to dial."""
    if not number:
        return "-"
    digits = re.sub(r"\D", "", number)
    if len(digits) <= 4:
        return "*" * len(digits)
    prefix = "+" + digits[0] if number.strip().startswith("+") else ""
    keep = 1 if prefix else 0
    return prefix + "*" * (len(digits) - keep - 2) + digits[-2:]


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "[secret]")
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


@contextlib.contextmanager
def bind_call(call_id: str | None) -> Iterator[None]:
    token = call_id_var.set(call_id)
    try:
        yield
    finally:
        call_id_var.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            "call_id": getattr(record, "call_id", None) or call_id_var.get(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.setdefault(key, value)
        if record.exc_info and record.exc_info[0] is not None:
            exc = record.exc_info[1]
            line["error"] = f"{type(exc).__name__}: {exc}"
            if record.levelno >= logging.ERROR:
                line["traceback"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str, ensure_ascii=False))


class HumanFormatter(logging.Formatter):
    """One short line for a person at a terminal (the CLI's commands), on stderr, redacted:
    ``warning: campaign_csv_rows_rejected rejected=3 first_lines=[2, 5, 9]``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        extra = " ".join(f"{k}={v}" for k, v in fields.items()) if isinstance(fields, dict) else ""
        line = f"{record.levelname.lower()}: {record.getMessage()} {extra}".rstrip()
        if record.exc_info and record.exc_info[0] is not None:
            line += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        return redact(line)


def configure(level: str = "info", stream: Any = None, human: bool = False) -> None:
    """Logging for this process: JSON lines (the server) or short human lines (the CLI), on
    stderr either way, so a command's own output on stdout stays clean."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(HumanFormatter() if human else JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries that would log request URLs with tokens or numbers in them stay quiet.
    for noisy in ("httpx", "httpcore", "twilio.http_client", "websockets", "aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def event(log: logging.Logger, name: str, /, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event: ``event(log, "stream_closed", reason="stop")``."""
    if log.isEnabledFor(level):
        log.log(level, name, extra={"fields": fields})
