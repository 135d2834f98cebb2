"""A 200-contact campaign, start to finish, on an injected clock: retries, calling hours, DNC,
429s. Real twilio client, real callbacks over loopback; only the clock is fake."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter, defaultdict
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as pn_timezone

from app.campaigns.engine import CampaignEngine
from app.campaigns.manage import create_from_csv
from tests.campaigns.clock import FakeClock
from tests.fakes.twilio_api import FakeTwilio
from tests.outbound.harness import outbound_stack

AREAS = ("212", "312", "415", "907", "808", "604", "416", "303")  # NY .. Hawaii, Alaska, Canada
START = dt.datetime(2026, 3, 2, 13, 30, tzinfo=dt.UTC).timestamp()  # 08:30 in New York
RETRY_BASE_S = 4 * 3600  # retries 4 h then 8 h later: some land after 20:00 and must wait


def numbers() -> list[str]:
    return [f"+1{area}55501{i:02d}" for area in AREAS for i in range(25)]


def script(to: str, attempt: int) -> str:
    kind = int(to[-2:]) % 5
    if kind == 0:
        return "busy" if attempt == 1 else "human"
    if kind == 1:
        return "no-answer"
    if kind == 2:
        return "failed" if attempt < 3 else "human"
    return "machine" if kind == 3 else "human"


EXPECTED = {  # kind -> (attempts, final status, last result)
    0: (2, "completed", "answered"),
    1: (3, "failed", "no-answer"),
    2: (3, "completed", "answered"),
    3: (1, "completed", "voicemail"),
    4: (1, "completed", "answered"),
}


def local_hour_ok(at: float, e164: str) -> bool:
    zones = pn_timezone.time_zones_for_number(phonenumbers.parse(e164))
    for zone in zones:
        local = dt.datetime.fromtimestamp(at, ZoneInfo(zone))
        if not 9 <= local.hour < 20:
            return False
    return True


async def test_two_hundred_contacts_complete_with_retries_inside_calling_hours(tmp_path):
    clock = FakeClock(START)
    phones = numbers()
    assert len(phones) == 200
    dnc = {phones[7], phones[120]}
    fake = FakeTwilio(behaviour=script, clock=clock.now, talk_s=30)
    env = {"TWILIO_CPS": "1", "CAMPAIGN_MAX_CONCURRENT": "10"}
    async with outbound_stack(tmp_path, env=env, clock=clock, fake=fake) as stack:
        csv_text = "phone,first_name\n" + "".join(
            f"{p},Person{i}\n" for i, p in enumerate(phones)
        )
        campaign_id, parsed = await create_from_csv(
            stack.store, stack.settings.outbound, name="reminders", csv_text=csv_text,
            now=clock.now(), prompt="Remind {first_name}.",
            overrides={"max_attempts": 3, "retry_base_s": RETRY_BASE_S},
        )
        assert campaign_id is not None and parsed.errors == []
        await stack.store.campaigns.add_dnc(dnc, now=clock.now())
        await stack.store.campaigns.command(campaign_id, "run", clock.now())
        fake.throttle(3)  # the first three creates get 429 / 20429

        engine = CampaignEngine(stack.service, campaign_id, poll_s=0.05, max_idle_s=None)
        status = await asyncio.wait_for(engine.run(), 240)
        await fake.wait_idle()

        assert status == "completed"
        contacts = {c["phone"]: c for c in await stack.store.campaigns.contacts(
            campaign_id, limit=1000)}
        attempts = await stack.store.campaigns.attempts(campaign_id)

    # The do-not-call numbers were never dialled.
    dialled = Counter(c.to for c in fake.creates)
    assert not dnc & set(dialled)
    assert {contacts[p]["status"] for p in dnc} == {"dnc"}
    # Every other contact ends as its script says, dialled once per attempt, no more.
    by_contact: dict[str, list[float]] = defaultdict(list)
    for create in fake.creates:
        by_contact[create.to].append(create.at)
    for phone in set(phones) - dnc:
        want_attempts, want_status, want_result = EXPECTED[int(phone[-2:]) % 5]
        c = contacts[phone]
        assert (c["attempts"], c["status"], c["last_result"]) == (
            want_attempts, want_status, want_result,
        ), phone
        assert dialled[phone] == want_attempts, phone
        times = by_contact[phone]
        # Backoff: the second try at least 4 h after the first, the third 8 h after that.
        for n in range(1, len(times)):
            assert times[n] - times[n - 1] >= RETRY_BASE_S * 2 ** (n - 1), phone
    assert len(attempts) == len(fake.creates)
    assert len({(a["contact_id"], a["attempt"]) for a in attempts}) == len(attempts)
    assert all(a["call_sid"] for a in attempts)
    # Not one call outside 09:00-20:00 in the callee's local time (every zone of the number).
    assert all(local_hour_ok(c.at, c.to) for c in fake.creates)
    # Some retries were pushed past closing time to the next day: the rule was exercised.
    day_one = dt.datetime.fromtimestamp(START, dt.UTC).date()
    assert any(dt.datetime.fromtimestamp(c.at, dt.UTC).date() > day_one for c in fake.creates)
    # 429s were absorbed: refused requests placed no call and the contacts were still called.
    assert len(fake.throttled) == 3
    # Global pacing (1 CPS + guard) held on the injected clock.
    stamps = sorted(c.at for c in fake.creates)
    assert min(b - a for a, b in zip(stamps, stamps[1:], strict=False)) >= 1.0
    # Machines got the voicemail, exactly once each.
    machines = [c for c in fake.calls.values() if c.script == "machine"]
    assert machines and all(len(c.updates) == 1 for c in machines)
