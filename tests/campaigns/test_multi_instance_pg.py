"""Two dialler processes on one PostgreSQL database run one campaign.

Real OS processes throughout: two ``voice-agent campaign run`` diallers, and a third instance
taking Twilio's callbacks and the campaign API (as if behind the same load balancer). The real
twilio client talks to the fake Twilio in this process, which timestamps every create.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from app.store import Store
from tests.fakes.twilio_api import FakeTwilio, bind_local
from tests.outbound.harness import API_TOKEN, stack_env
from tests.store.pg import pg_url  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[2]
CPS = 8


def script(to: str, attempt: int) -> str:
    kind = int(to[-2:]) % 4
    if kind == 0:
        return "busy" if attempt == 1 else "human"
    if kind == 1:
        return "no-answer"
    return "machine" if kind == 2 else "human"


def expected_attempts(to: str) -> int:
    return 1 if int(to[-2:]) % 4 in (2, 3) else 2


async def _spawn(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.mark.postgres
@pytest.mark.slow
async def test_two_processes_dial_each_attempt_once_within_global_cps(pg_url):  # noqa: F811
    phones = [f"+1{area}55501{i:02d}" for area in ("212", "415", "604") for i in range(16)]
    async with FakeTwilio(behaviour=script, step_s=0.05, machine_wait_s=1.0) as fake:
        sock = bind_local()
        port = sock.getsockname()[1]
        sock.close()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            **stack_env(fake, base),
            "DATABASE_URL": pg_url,
            "TWILIO_CPS": str(CPS),
            "CAMPAIGN_MAX_CONCURRENT": "6",
        }
        callbacks = await _spawn(
            "-m", "uvicorn", "--factory", "tests.outbound.callback_app:create",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            env={**env, "CAMPAIGN_DIALER": "false"},
        )
        procs: list[asyncio.subprocess.Process] = []
        try:
            auth = {"Authorization": f"Bearer {API_TOKEN}"}
            async with httpx.AsyncClient(base_url=base, timeout=10, trust_env=False) as http:
                for _ in range(300):
                    try:
                        if (await http.get("/api/campaigns", headers=auth)).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.05)
                csv_text = "phone,name\n" + "".join(f"{p},N{i}\n" for i, p in enumerate(phones))
                created = await http.post("/api/campaigns", headers=auth, json={
                    "name": "two instances", "csv": csv_text, "start": True,
                    "settings": {"hours": "00:00-24:00", "retry_base_s": 0.5,
                                 "max_attempts": 2, "cps": CPS},
                })
                assert created.status_code == 201, created.text
                campaign_id = created.json()["id"]
            fake.throttle(2)
            procs = [
                await _spawn("-m", "app.cli", "campaign", "run", campaign_id, "--no-progress",
                             "--poll", "0.1", env=env)
                for _ in range(2)
            ]
            outputs = await asyncio.wait_for(
                asyncio.gather(*(p.communicate() for p in procs)), 120
            )
            for p, (_, err) in zip(procs, outputs, strict=True):
                assert p.returncode == 0, err.decode()[-3000:]
            await fake.wait_idle()
        finally:
            for p in [*procs, callbacks]:
                await _stop(p)

    store = await Store.open(pg_url)
    try:
        campaign = await store.campaigns.get(campaign_id)
        attempts = await store.campaigns.attempts(campaign_id)
        contacts = await store.campaigns.contacts(campaign_id, limit=1000)
    finally:
        await store.close()
    assert campaign is not None and campaign["status"] == "completed"
    # Both processes dialled: this really was a shared campaign.
    assert len({a["instance"] for a in attempts}) == 2
    # Every contact dialled exactly once per attempt.
    dialled = Counter(c.to for c in fake.creates)
    assert dialled == {p: expected_attempts(p) for p in phones}
    assert {c["phone"]: c["attempts"] for c in contacts} == dict(dialled)
    assert {c["status"] for c in contacts} <= {"completed", "failed"}
    assert len({(a["contact_id"], a["attempt"]) for a in attempts}) == len(attempts)
    assert sorted(a["call_sid"] for a in attempts) == sorted(c.sid for c in fake.creates)
    # The global rate held at the provider: no one-second window saw more than CPS creates.
    stamps = sorted(c.at for c in fake.creates)
    busiest = max(sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps)
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    print(f"creates={len(stamps)} span={stamps[-1] - stamps[0]:.2f}s busiest={busiest} "
          f"min_gap={min(gaps):.3f}s")
    assert busiest <= CPS
    assert len(fake.throttled) == 2
