"""A dialler dies mid-campaign; a new one resumes it and settles what was left in flight."""

from __future__ import annotations

import asyncio
import datetime as dt

from app.campaigns import policy
from app.campaigns.engine import CampaignEngine
from app.campaigns.manage import create_from_csv
from tests.campaigns.clock import FakeClock
from tests.fakes.twilio_api import FakeTwilio
from tests.outbound.harness import outbound_stack

START = dt.datetime(2026, 3, 2, 16, 0, tzinfo=dt.UTC).timestamp()  # 11:00 in New York
PHONES = [f"+1212555010{i}" for i in range(6)]


async def test_restart_reconciles_calls_in_flight_and_finishes(tmp_path):
    clock = FakeClock(START)
    # Calls before the crash are answered and held open; after it, short human calls.
    before_crash = [True]
    fake = FakeTwilio(
        behaviour=lambda to, n: "hold" if before_crash[0] else "human", clock=clock.now,
        talk_s=33,
    )
    env = {"TWILIO_CPS": "1", "CAMPAIGN_MAX_CONCURRENT": "3"}
    async with outbound_stack(tmp_path, env=env, clock=clock, fake=fake) as stack:
        store = stack.store.campaigns
        cid, _ = await create_from_csv(
            stack.store, stack.settings.outbound, name="crash", now=clock.now(),
            csv_text="phone\n" + "\n".join(PHONES) + "\n",
            overrides={"retry_base_s": 60, "max_attempts": 3},
        )
        assert cid
        await store.command(cid, "run", clock.now())
        # Another dialler claimed a contact and died before calling it.
        orphan = await store.claim(
            cid, instance="dead-instance", now=clock.now(), next_open=policy.next_open
        )
        assert orphan.contact is not None

        first = CampaignEngine(stack.service, cid, poll_s=0.02, max_idle_s=None)
        crashed = asyncio.create_task(first.run())
        # two calls placed besides the orphan's claim: at capacity (paced at 1 a second; a
        # loaded machine may take several)
        for _ in range(3000):
            placed = [r for r in await store.in_flight(cid) if r["call_sid"]]
            if len(placed) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(placed) == 2, "the dialler never reached capacity"
        crashed.cancel()  # the process dies with two calls in flight
        await asyncio.gather(crashed, return_exceptions=True)
        before_crash[0] = False
        in_flight = await store.in_flight(cid)
        assert len(in_flight) == 3
        assert sorted(bool(r["call_sid"]) for r in in_flight) == [False, True, True]

        # While nobody listens, the held calls end at Twilio and their callbacks are lost.
        fake.drop_callbacks = True
        for sid in list(fake.calls):
            fake.complete(sid)
        await fake.wait_idle()
        fake.drop_callbacks = False
        clock.t += 600  # the restart comes later: in-flight claims are now stale

        second = CampaignEngine(stack.service, cid, poll_s=0.02, max_idle_s=None)
        status = await asyncio.wait_for(second.run(), 60)
        await fake.wait_idle()
        contacts = {c["phone"]: c for c in await store.contacts(cid)}
        attempts = await store.attempts(cid)

    assert status == "completed"
    held = {fake.calls[s].to for s in fake.calls if fake.calls[s].script == "hold"}
    assert len(held) == 2
    for phone in held:  # settled from Twilio's status: answered, never dialled again
        assert (contacts[phone]["status"], contacts[phone]["attempts"]) == ("completed", 1)
        assert contacts[phone]["duration_s"] == 33
    # The orphaned claim counted as a failed attempt and was retried once.
    orphan_phone = orphan.contact.phone
    assert (contacts[orphan_phone]["attempts"], contacts[orphan_phone]["status"]) == (
        2, "completed",
    )
    assert [c.to for c in fake.creates].count(orphan_phone) == 1
    # Nobody was dialled twice for one attempt, and everyone was reached.
    assert len({(a["contact_id"], a["attempt"]) for a in attempts}) == len(attempts)
    assert {c["status"] for c in contacts.values()} == {"completed"}
    assert len(fake.creates) == len(PHONES)


async def test_a_dialler_stopped_while_twilio_answers_the_create_keeps_that_call(tmp_path):
    """The stop comes after the create request left: the call exists at Twilio, so the contact
    stays in flight with its call instead of going back to be dialled again."""
    clock = FakeClock(START)
    fake = FakeTwilio(behaviour=lambda to, n: "hold", clock=clock.now)
    env = {"TWILIO_CPS": "1", "CAMPAIGN_MAX_CONCURRENT": "1"}
    async with outbound_stack(tmp_path, env=env, clock=clock, fake=fake) as stack:
        store = stack.store.campaigns
        cid, _ = await create_from_csv(
            stack.store, stack.settings.outbound, name="stop", now=clock.now(),
            csv_text="phone\n" + PHONES[0] + "\n",
        )
        await store.command(cid, "run", clock.now())
        fake.hold_creates = asyncio.Event()
        engine = asyncio.create_task(CampaignEngine(stack.service, cid, poll_s=0.02).run())
        for _ in range(3000):
            if fake.held_creates:
                break
            await asyncio.sleep(0.01)
        assert fake.held_creates == 1, "the dialler never sent the create"
        engine.cancel()  # the process is told to stop while Twilio creates the call
        await asyncio.sleep(0.05)
        fake.hold_creates.set()
        await asyncio.gather(engine, return_exceptions=True)
        assert engine.cancelled()

        (row,) = await store.in_flight(cid)
        (call,) = fake.calls.values()
        assert row["call_sid"] == call.sid  # recorded, and the contact still in flight
        contacts = await store.contacts(cid)
        assert [(c["status"], c["attempts"]) for c in contacts] == [("calling", 1)]
        for sid in list(fake.calls):
            fake.complete(sid)
        await fake.wait_idle()
