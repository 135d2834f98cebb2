"""Status and AMD callbacks: signature-checked, idempotent, tolerant of out-of-order arrival."""

from __future__ import annotations

import logging

import httpx
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from app.campaigns import policy
from app.store.schema import calls
from tests.outbound.harness import outbound_stack

TO = "+12125550142"


async def _status_of(stack, sid):  # type: ignore[no-untyped-def]
    async with stack.store.db.read() as conn:
        return (await conn.execute(sa.select(calls).where(calls.c.id == sid))).mappings().one()


async def test_completed_first_is_not_overwritten_by_late_callbacks(tmp_path):
    async with outbound_stack(tmp_path, order="reversed") as stack:
        placed = await stack.service.dial(TO)
        await stack.fake.wait_idle()
        sent = [c.params["CallStatus"] for c in stack.fake.callbacks if "CallStatus" in c.params]
        assert sent == ["completed", "in-progress", "ringing", "initiated"]
        assert all(c.status_code == 204 for c in stack.fake.callbacks)
        row = await _status_of(stack, placed.call_sid)
        assert row["status"] == "completed"
        assert row["status_seq"] == 3
        assert row["duration_s"] == 7


async def test_repeated_callbacks_change_nothing(tmp_path):
    async with outbound_stack(tmp_path, duplicate=True) as stack:
        placed = await stack.service.dial(TO)
        await stack.fake.wait_idle()
        statuses = [c.params.get("CallStatus") for c in stack.fake.callbacks]
        assert statuses.count("completed") == 2
        row = await _status_of(stack, placed.call_sid)
        assert (row["status"], row["answered_by"], row["amd_action"]) == (
            "completed", "human", "agent",
        )
        # Replaying any callback now is a no-op that still answers 2xx (Twilio stops retrying).
        update = await stack.service.on_status(
            {"CallSid": placed.call_sid, "CallStatus": "ringing", "SequenceNumber": "1"}, {}
        )
        assert (update.applied, update.status) == (False, "completed")


async def test_unsigned_or_wrongly_signed_callbacks_are_refused_and_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    async with outbound_stack(tmp_path) as stack:
        url = f"{stack.base_url}/twilio/status"
        form = {"CallSid": "CA" + "1" * 32, "CallStatus": "completed", "AccountSid": "AC"}
        forged = RequestValidator("not-the-auth-token").compute_signature(url, form)
        good = RequestValidator(stack.fake.auth_token).compute_signature(url, form)
        async with httpx.AsyncClient(trust_env=False) as http:
            unsigned = await http.post(url, data=form)
            wrong = await http.post(url, data=form, headers={"X-Twilio-Signature": forged})
            tampered = await http.post(
                url, data={**form, "CallStatus": "busy"}, headers={"X-Twilio-Signature": good}
            )
            signed = await http.post(url, data=form, headers={"X-Twilio-Signature": good})
            bad_status = await http.post(
                url, data={**form, "CallStatus": "bogus"},
                headers={"X-Twilio-Signature": RequestValidator(
                    stack.fake.auth_token).compute_signature(url, {**form, "CallStatus": "bogus"})},
            )
        assert (unsigned.status_code, wrong.status_code, tampered.status_code) == (403, 403, 403)
        assert signed.status_code == 204
        assert bad_status.status_code == 400
        row = await _status_of(stack, form["CallSid"])
        assert row["status"] == "completed"
    rejected = [r for r in caplog.records if r.getMessage() == "twilio_signature_rejected"]
    assert len(rejected) == 3
    assert all(r.fields["route"] == "status" for r in rejected)


async def test_campaign_contact_is_finished_once_despite_duplicates(tmp_path):
    from app.campaigns.manage import create_from_csv

    async with outbound_stack(tmp_path, duplicate=True, behaviour=lambda to, n: "busy") as stack:
        campaign_id, _ = await create_from_csv(
            stack.store, stack.settings.outbound, name="dup", csv_text=f"phone\n{TO}\n",
            now=stack.service.clock.now(), overrides={"hours": "00:00-24:00"},
        )
        assert campaign_id
        await stack.store.campaigns.command(campaign_id, "run", stack.service.clock.now())
        claim = await stack.store.campaigns.claim(
            campaign_id, instance="test", now=stack.service.clock.now(),
            next_open=policy.next_open,
        )
        assert claim.contact is not None
        sid = await stack.service.place(
            TO, from_number="+14155550100", variables={}, prompt=None, campaign_id=campaign_id,
            contact_id=claim.contact.contact_id, attempt=1, attempt_id=claim.contact.attempt_id,
        )
        await stack.fake.wait_idle()
        [contact] = await stack.store.campaigns.contacts(campaign_id)
        [attempt] = await stack.store.campaigns.attempts(campaign_id)
        assert (contact["status"], contact["attempts"], contact["last_result"]) == (
            "pending", 1, "busy",
        )
        # Retried after the base backoff (900 s by default), counted from the first "busy".
        assert contact["next_attempt_at"] - contact["updated_at"] == 900
        assert (attempt["call_sid"], attempt["result"]) == (sid, "busy")
