"""SIGTERM to a real ``voice-agent serve`` during live simulated calls.

One call finishes by itself within the drain deadline and must not be touched; one keeps talking
and must last until the deadline, then hear the goodbye and be hung up by the agent. Meanwhile
``/health`` answers 503 "draining" and a new call's webhook gets the polite refusal. The process
exits 0 before the platform would kill it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

from app.simulator import CallOptions, simulate_call
from tests.ops.serverproc import start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DRAIN_TIMEOUT_S = 25.0
DRAIN_GRACE_S = 10.0
CHATTY = ["Can you tell me your opening hours on weekdays please?"] * 30
SHORT = ["No, that's everything. Thank you, goodbye."]


def log_events(text: str, name: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if f'"event": "{name}"' in line:
            out.append(json.loads(line))
    return out


async def timed_call(url: str, lines: list[str]) -> tuple[object, float]:
    result = await simulate_call(url, lines, CallOptions(call_timeout=150, reply_timeout=30))
    return result, time.monotonic()


async def test_sigterm_drains_live_calls_and_exits_zero(tmp_path: Path) -> None:
    server = await start_server(
        tmp_path, DRAIN_TIMEOUT_S=str(DRAIN_TIMEOUT_S), DRAIN_GRACE_S=str(DRAIN_GRACE_S)
    )
    try:
        chatty = asyncio.create_task(timed_call(server.url, CHATTY))
        short = asyncio.create_task(timed_call(server.url, SHORT))
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            for _ in range(300):  # both calls live
                if (await http.get("/health")).json()["calls"] == 2:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the two calls never went live")

            server.signal(signal.SIGTERM)
            sent_at = time.monotonic()

            for _ in range(100):
                health = await http.get("/health")
                if health.status_code == 503:
                    break
                await asyncio.sleep(0.02)
            assert health.status_code == 503 and health.json()["status"] == "draining"

            # a new call is refused politely, not connected
            webhook = await http.post("/twilio/voice", data={
                "CallSid": "CA" + "e" * 32, "AccountSid": "AC" + "0" * 32,
                "From": "+14155550123", "To": "+14155550100", "Direction": "inbound",
            })
            assert webhook.status_code == 200
            twiml = ET.fromstring(webhook.text)
            verbs = [child.tag for child in twiml]
            assert "Connect" not in verbs and "Say" in verbs
            assert verbs[-1] in {"Hangup", "Dial"}

        short_result, short_end = await short
        chatty_result, chatty_end = await chatty
        code = await server.wait(DRAIN_GRACE_S + 20)
    finally:
        await server.stop()

    log = server.log()
    # The short call ended on its own, before the deadline, hung up by the agent's goodbye.
    assert short_result.error is None and short_result.hangup == "agent"
    assert short_end - sent_at < DRAIN_TIMEOUT_S
    # The chatty call was not cut before the deadline, then was told goodbye and hung up.
    assert chatty_result.error is None
    assert chatty_end - sent_at >= DRAIN_TIMEOUT_S - 0.5, chatty_end - sent_at
    assert chatty_end - sent_at <= DRAIN_TIMEOUT_S + DRAIN_GRACE_S + 2
    assert chatty_result.hangup == "agent"
    assert not chatty_result.violations and not short_result.violations
    # and the process left cleanly
    assert code == 0, log[-3000:]
    finished = log_events(log, "drain_finished")
    assert len(finished) == 1
    assert finished[0]["ended_naturally"] == 1 and finished[0]["told_goodbye"] == 1
    assert finished[0]["left_over"] == 0
    assert log_events(log, "twilio_call_busy")  # the refused webhook was logged
