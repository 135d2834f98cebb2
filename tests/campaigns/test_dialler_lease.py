"""Every worker of every instance runs a campaign supervisor; only the one holding the
store's dialler lease dials, and another takes over as soon as it stops."""

from __future__ import annotations

import asyncio
import time

from app.campaigns.engine import CampaignSupervisor
from app.campaigns.manage import create_from_csv
from tests.outbound.harness import outbound_stack


async def until(predicate, within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_one_worker_dials_and_another_takes_over(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"TWILIO_CPS": "1", "CAMPAIGN_MAX_CONCURRENT": "1"}
    async with outbound_stack(tmp_path, env=env, talk_s=60) as stack:
        csv_text = "phone\n" + "".join(f"+1415555{i:04d}\n" for i in range(20))
        campaign_id, parsed = await create_from_csv(
            stack.store, stack.settings.outbound, name="lease", csv_text=csv_text,
            now=time.time(),
        )
        assert campaign_id is not None and not parsed.errors
        await stack.store.campaigns.command(campaign_id, "run", time.time())
        workers = [CampaignSupervisor(stack.service, poll_s=0.05) for _ in range(3)]
        for worker in workers:
            worker.start()
        try:
            await until(lambda: any(w._engines for w in workers))
            await asyncio.sleep(0.3)  # several polls each: still exactly one dialler
            dialling = [w for w in workers if w._engines]
            assert len(dialling) == 1 and [w._owner for w in workers].count(True) == 1
            owner = dialling[0]
            await owner.stop()  # a worker shutting down hands the lease back at once
            rest = [w for w in workers if w is not owner]
            await until(lambda: any(w._engines for w in rest), within=2.0)
            assert [w._owner for w in rest].count(True) == 1
        finally:
            for worker in workers:
                await worker.stop()
