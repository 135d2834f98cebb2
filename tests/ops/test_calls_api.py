"""The calls API over a real SQLite store filled by the real call-record observer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from app.config import OpsSettings, Settings
from app.core.providers import CallInfo
from app.core.records import TranscriptLine, TurnMetrics
from app.ops import calls_api
from app.runtime.context import CallRegistry
from tests.ops.records import CALLER, add_campaign, finished_call, open_store, write_calls


class LiveRunner:
    def __init__(self) -> None:
        self.transcript = [TranscriptLine("caller", "still talking", 1.0)]
        self.turns = [TurnMetrics(1, speech_end=1.0, stt_final=1.2, turn_committed=1.2,
                                  llm_first_token=1.5, tts_first_audio=1.6,
                                  first_audio_sent=1.61)]
        self.ended = False


class Ctx:
    def __init__(self, store: object, token: str | None = None) -> None:
        self.settings = Settings(ops=OpsSettings(api_token=token))
        self.calls = CallRegistry(max_calls=4)
        self.store = store
        self.admission = None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[object]:
    store = await open_store(tmp_path)
    await write_calls(store, [finished_call(1), finished_call(2, "webrtc")])
    await add_campaign(store, time.time())
    yield store
    await store.close()


def client(app: Starlette, host: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_lists_and_shows_calls_with_masked_numbers(store: object) -> None:
    ctx = Ctx(store)
    live_call = CallInfo("CA" + "f" * 32, "twilio", from_number="+14155550999")
    ctx.calls.add(live_call, LiveRunner())
    app = Starlette(routes=calls_api.routes(ctx))
    async with client(app) as c:
        listing = await c.get("/api/calls")
        assert listing.status_code == 200
        calls = listing.json()["calls"]
        assert [x["transport"] for x in calls] == ["webrtc", "twilio"]  # newest first
        assert CALLER not in listing.text and calls[1]["from"] == "+1********23"

        twilio_id = calls[1]["id"]
        detail = (await c.get(f"/api/calls/{twilio_id}")).json()
        assert [line["role"] for line in detail["transcript"]] == [
            "agent", "caller", "agent", "caller", "agent"]
        assert detail["transcript"][1]["text"] == "I'd like to book a cleaning for tomorrow."
        assert detail["transcript"][-1]["interrupted"] is True
        first, second = detail["turns"]
        assert first["stages_ms"]["endpoint_to_stt_final"] == 350.0
        assert first["stages_ms"]["llm_first_token"] == 500.0
        assert first["stages_ms"]["total"] == 1060.0
        assert second["filler"] is True
        assert [e["kind"] for e in detail["events"]] == [
            "call_started", "greeting_first_audio", "barge_in"]
        assert detail["usage"]["llm_input_tokens"] == 420
        assert detail["end_reason"] == "agent ended"
        assert detail["live"] is False

        assert (await c.get("/api/calls/CAnope")).status_code == 404

        live = (await c.get("/api/live")).json()
        assert live["capacity"] == 4 and live["draining"] is False
        assert [x["id"] for x in live["calls"]] == [live_call.call_id]
        assert live["calls"][0]["turns"] == 1 and live["calls"][0]["last_turn_ms"] == 610.0
        assert "0999" not in str(live)

        campaigns = (await c.get("/api/dashboard/campaigns")).json()["campaigns"]
        assert campaigns[0]["name"] == "Spring recall"
        assert campaigns[0]["progress"]["total"] == 4 and campaigns[0]["progress"]["done"] == 0


async def test_token_is_required_when_set(store: object) -> None:
    app = Starlette(routes=calls_api.routes(Ctx(store, token="api-secret-42")))
    async with client(app) as c:
        for path in ("/api/calls", "/api/live", "/api/dashboard/campaigns", "/api/calls/x"):
            assert (await c.get(path)).status_code == 401, path
        ok = await c.get("/api/calls", headers={"Authorization": "Bearer api-secret-42"})
        assert ok.status_code == 200
        page = await c.get("/dashboard")  # the page holds no data; its requests need the token
        assert page.status_code == 200 and "<table" in page.text


async def test_without_token_only_direct_loopback_peers(store: object) -> None:
    app = Starlette(routes=calls_api.routes(Ctx(store)))
    async with client(app, host="203.0.113.7") as c:
        assert (await c.get("/api/calls")).status_code == 401
    async with client(app) as c:
        proxied = await c.get("/api/calls", headers={"X-Forwarded-For": "203.0.113.7"})
        assert proxied.status_code == 401
        assert (await c.get("/api/calls")).status_code == 200


async def test_without_a_store_the_api_says_so() -> None:
    app = Starlette(routes=calls_api.routes(Ctx(None)))
    async with client(app) as c:
        response = await c.get("/api/calls")
        assert response.status_code == 503
        assert (await c.get("/api/live")).status_code == 200


async def test_cost_is_priced_from_usage_with_configured_rates(store: object) -> None:
    ctx = Ctx(store)
    ctx.settings = Settings(ops=OpsSettings(price_stt_per_min=0.0043,
                                            price_llm_input_per_mtok=1.0,
                                            price_llm_output_per_mtok=5.0,
                                            price_tts_per_1k_chars=0.3))
    app = Starlette(routes=calls_api.routes(ctx))
    async with client(app) as c:
        calls = (await c.get("/api/calls")).json()["calls"]
        expected = round(9.5 / 60 * 0.0043 + 420e-6 + 60 * 5e-6 + 0.12 * 0.3, 6)
        assert [x["cost"] for x in calls] == [expected, expected]
        detail = (await c.get(f"/api/calls/{calls[0]['id']}")).json()
        assert detail["cost"] == expected
    async with client(Starlette(routes=calls_api.routes(Ctx(store)))) as c:
        assert [x["cost"] for x in (await c.get("/api/calls")).json()["calls"]] == [None, None]



def test_recordings_are_fetched_from_twilio_only_with_our_credentials() -> None:
    from app.config import TwilioSettings
    from app.ops.calls_api import recording_source

    tw = TwilioSettings(account_sid="AC" + "1" * 32, auth_token="tok")
    url = f"https://api.twilio.com/2010-04-01/Accounts/{tw.account_sid}/Recordings/RE1"
    assert recording_source(url, tw) == (url + ".mp3", (tw.account_sid, "tok"))
    # a URL a forged callback could have stored elsewhere never gets the credentials
    assert recording_source("https://evil.example/RE1", tw) is None
    keyed = TwilioSettings(account_sid=tw.account_sid, api_key="SK1", api_secret="sec",
                           api_base_url="http://127.0.0.1:9999")
    assert recording_source("http://127.0.0.1:9999/RE1.mp3", keyed) == (
        "http://127.0.0.1:9999/RE1.mp3", ("SK1", "sec"))
    assert recording_source(None, tw) is None


async def test_calls_can_be_filtered_searched_and_paged(store: object) -> None:
    app = Starlette(routes=calls_api.routes(Ctx(store)))
    async with client(app) as c:
        every = (await c.get("/api/calls")).json()["calls"]
        web = (await c.get("/api/calls?transport=webrtc")).json()["calls"]
        assert [x["transport"] for x in web] == ["webrtc"]
        assert web[0]["from"] == "browser"  # a web caller has no number
        found = (await c.get(f"/api/calls?q={every[1]['id'][:10]}")).json()["calls"]
        assert [x["id"] for x in found] == [every[1]["id"]]
        assert (await c.get("/api/calls?q=zzz-nothing")).json()["calls"] == []
        page2 = (await c.get("/api/calls?limit=1&offset=1")).json()["calls"]
        assert [x["id"] for x in page2] == [every[1]["id"]]
