"""A real ``voice-agent serve`` with a one-call limit: ``/metrics`` moves as a simulated call
runs, and a second caller gets the overflow TwiML (a polite message, then the fallback number)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.simulator import CallOptions, simulate_call
from tests.ops.serverproc import start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TOKEN = "metrics-token-for-tests"
FALLBACK = "+14155550177"
LINES = ["Hi, I'd like to book a cleaning appointment.",
         "No, that's everything. Thank you, goodbye."]


def parse(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(http: httpx.AsyncClient) -> dict[tuple[str, tuple], float]:
    response = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    return parse(response.text)


def get(m: dict, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_follow_a_call_and_overflow_is_refused(tmp_path: Path) -> None:
    server = await start_server(
        tmp_path, MAX_CONCURRENT_CALLS="1", METRICS_TOKEN=TOKEN, OVERFLOW_NUMBER=FALLBACK
    )
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            assert (await http.get("/metrics")).status_code == 401
            before = await scrape(http)
            assert get(before, "voice_agent_call_capacity") == 1
            assert get(before, "voice_agent_active_calls", transport="twilio") == 0

            call = asyncio.create_task(simulate_call(server.url, LINES,
                                                     CallOptions(call_timeout=120)))
            during = before
            for _ in range(400):
                during = await scrape(http)
                if get(during, "voice_agent_active_calls", transport="twilio") == 1:
                    break
                await asyncio.sleep(0.05)
            assert get(during, "voice_agent_active_calls", transport="twilio") == 1
            assert get(during, "voice_agent_calls_started_total",
                       transport="twilio", direction="inbound") == 1

            # at the limit: the next caller hears the message and is sent to the fallback line
            overflow = await http.post("/twilio/voice", data={
                "CallSid": "CA" + "d" * 32, "AccountSid": "AC" + "0" * 32,
                "From": "+14155550123", "To": "+14155550100", "Direction": "inbound",
            })
            twiml = ET.fromstring(overflow.text)
            assert [child.tag for child in twiml] == ["Say", "Dial"]
            assert twiml.find("Dial").text == FALLBACK
            assert "busy" in twiml.find("Say").text

            refused = await scrape(http)
            assert get(refused, "voice_agent_calls_rejected_total",
                       transport="twilio", reason="full") == 1

            result = await call
            assert result.error is None and result.hangup == "agent", result.error
            after = await scrape(http)
    finally:
        await server.stop()

    assert get(after, "voice_agent_active_calls", transport="twilio") == 0
    assert get(after, "voice_agent_greeting_first_audio_seconds_count") == 1
    answered = sum(1 for t in result.turns[1:] if t.first_audio is not None)
    assert answered >= 1
    for stage in ("endpoint_to_stt_final", "llm_first_token", "tts_first_audio", "total"):
        count = get(after, "voice_agent_turn_latency_seconds_count", stage=stage)
        assert count >= answered, (stage, count)
        assert get(before, "voice_agent_turn_latency_seconds_count", stage=stage) == 0
    ended = sum(v for (name, _), v in after.items() if name == "voice_agent_calls_ended_total")
    assert ended == 1
    assert get(after, "voice_agent_call_duration_seconds_count", transport="twilio") == 1
    assert get(after, "voice_agent_call_duration_seconds_sum", transport="twilio") > 1.0
