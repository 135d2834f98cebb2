"""Error reports to Sentry when ``SENTRY_DSN`` is set, with personal data scrubbed first.

Every event is tagged with the call SID of the call it happened in (``app.logs.call_id_var``).
Before anything leaves the process, ``scrub`` walks the whole event: phone-number-like digit
runs and registered secrets are masked (``app.logs.redact``), text of live calls' transcripts is
replaced, and the places that can carry a caller's words wholesale are dropped: request bodies,
cookies, frame local variables, and log breadcrumb messages other than our own event names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import sentry_sdk

from app.logs import call_id_var, event, get_logger, redact, register_secret

if TYPE_CHECKING:
    from app.runtime.context import AppContext


log = get_logger(__name__)

TranscriptSource = Callable[[], Iterable[str]]

_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # our log lines' event names
_FRAGMENT_MIN = 8  # shorter pieces of a transcript are too common to scrub by value
_DROP_KEYS = {"data", "cookies", "vars", "body", "transcript", "text"}


def _fragments(texts: Iterable[str]) -> list[str]:
    """Whole transcript lines and their sentences/clauses, longest first."""
    pieces: set[str] = set()
    for text in texts:
        text = text.strip()
        if len(text) >= _FRAGMENT_MIN:
            pieces.add(text)
        for part in re.split(r"[.!?;,\n]+", text):
            part = part.strip()
            if len(part) >= _FRAGMENT_MIN:
                pieces.add(part)
    return sorted(pieces, key=len, reverse=True)


def _scrub_value(value: Any, fragments: list[str]) -> Any:
    if isinstance(value, str):
        for fragment in fragments:
            if fragment in value:
                value = value.replace(fragment, "[transcript]")
        return redact(value)
    if isinstance(value, dict):
        return {
            k: "[removed]" if k in _DROP_KEYS and v else _scrub_value(v, fragments)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub_value(v, fragments) for v in value]
    return value


def scrub(ev: dict[str, Any], transcripts: Iterable[str] = ()) -> dict[str, Any]:
    """Return the event with personal data removed. Pure; used by ``before_send``."""
    fragments = _fragments(transcripts)
    ev = dict(ev)
    request = ev.get("request")
    if isinstance(request, dict):
        request = {k: v for k, v in request.items() if k not in {"data", "cookies", "env"}}
        if isinstance(request.get("headers"), dict):
            # Twilio's signature, auth headers and forwarded client addresses are not needed
            request["headers"] = {
                k: v for k, v in request["headers"].items()
                if k.lower() in {"user-agent", "content-type", "host"}
            }
        ev["request"] = request
    crumbs = ev.get("breadcrumbs")
    if isinstance(crumbs, dict) and isinstance(crumbs.get("values"), list):
        ev["breadcrumbs"] = {**crumbs, "values": [_crumb(c) for c in crumbs["values"]]}
    return _scrub_value(ev, fragments)


def _crumb(crumb: dict[str, Any]) -> dict[str, Any]:
    kept = {k: crumb[k] for k in ("type", "category", "level", "timestamp") if k in crumb}
    message = crumb.get("message")
    if isinstance(message, str) and _EVENT_NAME.match(message):
        kept["message"] = message
    return kept


def _before_send(transcripts: TranscriptSource) -> Callable[[dict, dict], dict | None]:
    def before_send(ev: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
        call_sid = call_id_var.get()
        if call_sid:
            ev.setdefault("tags", {})["call_sid"] = call_sid
        try:
            texts = list(transcripts())
        except Exception:  # never let scrubbing fail open: drop the event instead
            return None
        return scrub(ev, texts)

    return before_send


def live_transcripts(ctx: AppContext) -> TranscriptSource:
    """Texts of every live call's transcript so far (the runner keeps them in memory)."""

    def texts() -> Iterable[str]:
        for runner in ctx.calls.runners():
            for line in getattr(runner, "transcript", ()):
                yield line.text

    return texts


def setup(dsn: str | None, environment: str, transcripts: TranscriptSource,
          release: str | None = None) -> bool:
    """Start reporting to ``dsn``; a no-op without one. Returns whether Sentry is on."""
    if not dsn:
        return False
    register_secret(dsn)
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        # What integrations may collect at all: no user identity, cookies, bodies, query
        # strings, model prompts/replies (transcripts!) or frame locals.
        data_collection={
            "user_info": False,
            "cookies": {"mode": "off"},
            "http_bodies": [],
            "url_query_params": {"mode": "off"},
            "http_headers": {"request": {"mode": "allowlist",
                                         "terms": ["user-agent", "content-type"]}},
            "gen_ai": {"inputs": False, "outputs": False},
            "stack_frame_variables": False,
        },
        before_send=_before_send(transcripts),
        before_breadcrumb=lambda crumb, hint: _crumb(crumb),
    )
    event(log, "sentry_enabled", environment=environment)
    return True


def shutdown(timeout: float = 2.0) -> None:
    """Flush what is queued and stop reporting (server shutdown, tests)."""
    client = sentry_sdk.get_client()
    if client.is_active():
        client.flush(timeout=timeout)
        client.close(timeout=timeout)
    sentry_sdk.get_global_scope().set_client(None)


def install(ctx: AppContext) -> bool:
    """Wire Sentry for this app from its settings (``SENTRY_DSN``, ``SENTRY_ENVIRONMENT``)."""
    ops = ctx.settings.ops
    return setup(ops.sentry_dsn, ops.sentry_environment, live_transcripts(ctx))
