"""One outbound call through the real twilio REST client against the local fake Twilio."""

from __future__ import annotations

import json
import logging

import pytest
import sqlalchemy as sa

from app.outbound.dialer import DialError
from app.outbound.service import DialRefused
from app.store.schema import calls
from tests.outbound.harness import FROM, outbound_stack

TO = "+14155550123"


async def _call_row(stack, sid):  # type: ignore[no-untyped-def]
    async with stack.store.db.engine.connect() as conn:
        return (await conn.execute(sa.select(calls).where(calls.c.id == sid))).mappings().one()


async def test_dial_uses_calls_create_with_signed_callbacks_and_async_amd(tmp_path):
    async with outbound_stack(tmp_path) as stack:
        placed = await stack.service.dial(
            "+1 (415) 555-0123", variables={"name": "Ann"}, prompt="Remind {name} of Friday."
        )
        await stack.fake.wait_idle()
        [create] = stack.fake.creates
        p = {k: v if k == "StatusCallbackEvent" else v[0] for k, v in create.params.items()}
        base = stack.base_url
        assert p["To"] == TO and p["From"] == FROM
        assert p["Url"] == f"{base}/twilio/voice"
        assert p["StatusCallback"] == f"{base}/twilio/status"
        assert sorted(p["StatusCallbackEvent"]) == ["answered", "completed", "initiated", "ringing"]
        assert p["MachineDetection"] == "DetectMessageEnd"
        assert p["AsyncAmd"] == "true"
        assert p["AsyncAmdStatusCallback"] == f"{base}/twilio/amd"
        assert placed.call_sid == create.sid
        # Twilio's side: every signed callback was accepted.
        assert [c.status_code for c in stack.fake.callbacks] == [204] * 5
        row = await _call_row(stack, placed.call_sid)
        assert row["direction"] == "outbound"
        assert row["status"] == "completed"
        assert row["answered_by"] == "human"
        assert row["amd_action"] == "agent"
        assert row["duration_s"] == 7
        context = await stack.store.call_context(placed.call_sid)
        assert context is not None
        assert context.call_variables() == {"name": "Ann", "prompt": "Remind {name} of Friday."}
        assert await stack.store.call_context("CA-unknown") is None


async def test_dial_outside_allowed_countries_is_refused_and_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    async with outbound_stack(tmp_path, env={"ALLOWED_COUNTRIES": "US,CA"}) as stack:
        with pytest.raises(DialRefused, match="ALLOWED_COUNTRIES"):
            await stack.service.dial("+33123456789")
        with pytest.raises(DialRefused, match="premium"):
            await stack.service.dial("+19005550123")
        assert stack.fake.creates == []
    refusals = [r for r in caplog.records if r.getMessage() == "dial_refused"]
    assert len(refusals) == 2
    assert refusals[0].fields["region"] == "FR"
    assert "123456789" not in json.dumps(refusals[0].fields)


async def test_do_not_call_number_is_refused(tmp_path):
    async with outbound_stack(tmp_path) as stack:
        await stack.store.campaigns.add_dnc([TO], now=0.0)
        with pytest.raises(DialRefused, match="do-not-call"):
            await stack.service.dial(TO)
        assert stack.fake.creates == []


async def test_voicemail_is_left_once_on_a_machine(tmp_path):
    async with outbound_stack(
        tmp_path, behaviour=lambda to, n: "machine", duplicate=True
    ) as stack:
        placed = await stack.service.dial(TO)
        await stack.fake.wait_idle()
        call = stack.fake.calls[placed.call_sid]
        # The AMD callback came twice; the voicemail TwiML was sent once.
        assert len([c for c in stack.fake.callbacks if "AnsweredBy" in c.params]) == 2
        assert len(call.updates) == 1
        twiml = call.updates[0]["Twiml"]
        assert "<Say>" in twiml and "call us back" in twiml
        assert twiml.endswith("<Hangup /></Response>")
        row = await _call_row(stack, placed.call_sid)
        assert row["answered_by"] == "machine_end_beep"
        assert row["amd_action"] == "voicemail"
        assert row["status"] == "completed"


@pytest.mark.parametrize(
    ("action", "expected_update"), [("hangup", {"Status": "completed"}), ("agent", None)]
)
async def test_fax_follows_configuration(tmp_path, action, expected_update):
    async with outbound_stack(
        tmp_path, env={"AMD_FAX_ACTION": action}, behaviour=lambda to, n: "fax",
        machine_wait_s=0.3,
    ) as stack:
        placed = await stack.service.dial(TO)
        await stack.fake.wait_idle()
        updates = stack.fake.calls[placed.call_sid].updates
        assert updates == ([expected_update] if expected_update else [])
        row = await _call_row(stack, placed.call_sid)
        assert (row["answered_by"], row["amd_action"]) == ("fax", action)


@pytest.mark.parametrize("outcome", ["busy", "no-answer", "failed"])
async def test_unanswered_outcomes_are_recorded(tmp_path, outcome):
    async with outbound_stack(tmp_path, behaviour=lambda to, n: outcome) as stack:
        placed = await stack.service.dial(TO)
        await stack.fake.wait_idle()
        row = await _call_row(stack, placed.call_sid)
        assert row["status"] == outcome
        assert row["answered_at"] is None


async def test_throttled_create_raises_a_throttled_error(tmp_path):
    async with outbound_stack(tmp_path) as stack:
        stack.fake.throttle(1)
        with pytest.raises(DialError) as info:
            await stack.service.dial(TO)
        assert (info.value.kind, info.value.status, info.value.code) == ("throttled", 429, 20429)
        assert stack.fake.creates == []


async def test_geo_permission_refusal_is_a_number_error(tmp_path):
    async with outbound_stack(tmp_path) as stack:
        stack.fake.geo_blocked.add(TO)
        with pytest.raises(DialError) as info:
            await stack.service.dial(TO)
        assert (info.value.kind, info.value.code) == ("number", 21215)


async def test_reconcile_fetches_the_final_status(tmp_path):
    async with outbound_stack(tmp_path, behaviour=lambda to, n: "hold") as stack:
        placed = await stack.service.dial(TO)
        for _ in range(200):
            if (await _call_row(stack, placed.call_sid))["status"] == "in-progress":
                break
            await __import__("asyncio").sleep(0.01)
        # The call ends at Twilio but its completed callback is lost: fetch tells us.
        call = stack.fake.calls[placed.call_sid]
        call.status, call.duration = "completed", 42
        update = await stack.service.reconcile(placed.call_sid)
        assert update.applied and update.status == "completed"
        assert (await _call_row(stack, placed.call_sid))["duration_s"] == 42
        stack.fake.complete(placed.call_sid)
        await stack.fake.wait_idle()
