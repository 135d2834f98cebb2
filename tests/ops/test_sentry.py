"""Error reports reach a (fake, local) Sentry tagged with the call SID and without personal data."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import sentry_sdk

from app.core.providers import CallInfo
from app.core.records import TranscriptLine
from app.logs import bind_call
from app.ops import sentry as ops_sentry
from app.runtime.context import CallRegistry
from tests.fakes.sentry_ingest import FakeSentry

CALLER = "+14155550123"
SAID = "Hi, this is Maria Lopez, my card number ends in four two"
CALL_SID = "CA" + "5" * 32


class _Runner:
    def __init__(self) -> None:
        self.transcript = [TranscriptLine("caller", SAID, 1.0)]


class _Ctx:
    def __init__(self) -> None:
        self.calls = CallRegistry(max_calls=2)
        self.calls.add(CallInfo(CALL_SID, "twilio", from_number=CALLER), _Runner())


@pytest.fixture
def fake() -> Iterator[FakeSentry]:
    with FakeSentry() as fake:
        yield fake
        ops_sentry.shutdown()


def fail_in_call(caller: str, said: str) -> None:
    local_number, local_words = caller, said  # locals Sentry would normally capture
    raise ValueError(f"could not book for {local_number}: {local_words!r}")


def test_event_is_tagged_and_carries_no_number_or_transcript(fake: FakeSentry) -> None:
    ctx = _Ctx()
    assert ops_sentry.setup(fake.dsn, "test", ops_sentry.live_transcripts(ctx))
    log = logging.getLogger("tests.sentry")
    with bind_call(CALL_SID):
        log.warning("caller said %s from %s", SAID, CALLER)  # becomes a breadcrumb
        sentry_sdk.add_breadcrumb(category="http", message=f"POST from {CALLER}",
                                  data={"From": CALLER, "SpeechResult": SAID})
        try:
            fail_in_call(CALLER, SAID)
        except ValueError:
            sentry_sdk.capture_exception()
    sentry_sdk.flush(timeout=5)
    assert fake.received.wait(5), "the fake DSN endpoint got nothing"

    events = fake.events()
    assert len(events) == 1
    ev = events[0]
    assert ev["tags"]["call_sid"] == CALL_SID
    assert ev["exception"]["values"][0]["type"] == "ValueError"
    assert "[transcript]" in ev["exception"]["values"][0]["value"]

    sent = "\n".join(fake.bodies)
    digits_only = "".join(ch for ch in CALLER if ch.isdigit())
    for secret in (CALLER, digits_only, "555 0123", "555-0123", SAID, "Maria Lopez",
                   "card number ends"):
        assert secret not in sent, f"{secret!r} reached Sentry"
    assert "4155550123" not in sent.replace("-", "").replace(" ", "")


def test_without_dsn_nothing_starts() -> None:
    assert ops_sentry.setup(None, "test", lambda: ()) is False
    assert not sentry_sdk.get_client().is_active()


def test_scrub_masks_request_and_keeps_event_names() -> None:
    ev = {
        "request": {
            "url": "https://agent.example.test/twilio/voice",
            "data": {"From": CALLER},
            "cookies": "session=abc",
            "headers": {"X-Twilio-Signature": "sig", "User-Agent": "TwilioProxy/1.1"},
            "query_string": f"To={CALLER}",
        },
        "breadcrumbs": {"values": [
            {"category": "app", "message": "call_started", "level": "info"},
            {"category": "app", "message": f"heard {SAID}", "level": "info"},
        ]},
        "extra": {"note": f"{SAID} at {CALLER}"},
    }
    out = ops_sentry.scrub(ev, [SAID])
    assert "data" not in out["request"] and "cookies" not in out["request"]
    assert out["request"]["headers"] == {"User-Agent": "TwilioProxy/1.1"}
    assert CALLER not in out["request"]["query_string"]
    assert [c.get("message") for c in out["breadcrumbs"]["values"]] == ["call_started", None]
    assert out["extra"]["note"].startswith("[transcript] at +1")
    assert CALLER not in str(out)
