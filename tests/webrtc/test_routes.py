"""Signalling over a real server: the page, session tokens, offers and their refusals."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import httpx
from aiortc import RTCPeerConnection

from app.config import ServerSettings
from app.core.providers import CallInfo
from app.runtime import workers
from app.transports.webrtc import WebRtcManager
from tests.webrtc.conftest import make_settings
from tests.webrtc.test_signal import CHROME_OFFER


def body(sdp: str, token: str) -> dict[str, str]:
    return {"sdp": sdp, "type": "offer", "token": token}


async def client_offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection()  # never connects here: no ICE servers needed
    pc.addTransceiver("audio", direction="sendrecv")
    pc.createDataChannel("captions")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def test_page_and_its_assets_are_served(server_factory) -> None:
    async with server_factory() as srv, httpx.AsyncClient(base_url=srv.url) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert 'id="call"' in page.text and "/call.js" in page.text
        script = await http.get("/call.js")
        assert script.status_code == 200
        for needle in ("echoCancellation", "noiseSuppression", "autoGainControl", "captions"):
            assert needle in script.text
        assert (await http.get("/call.css")).status_code == 200


async def test_session_gives_a_token_and_the_ice_servers(server_factory) -> None:
    async with (
        server_factory(turn_urls=("turn:turn.example.org:3478",), turn_secret="shh") as srv,
        httpx.AsyncClient(base_url=srv.url) as http,
    ):
        resp = await http.post("/webrtc/session")
        assert resp.status_code == 200
        body = resp.json()
        assert body["token"].count(".") == 2
        assert body["expires_in"] == 60
        (turn,) = body["ice_servers"]
        assert turn["urls"] == ["turn:turn.example.org:3478"]
        assert turn["username"].split(":")[0].isdigit() and turn["credential"]
        assert resp.headers["cache-control"] == "no-store"


async def test_an_offer_is_answered_with_gathered_candidates(server_factory, loopback_ice) -> None:
    async with server_factory() as srv, httpx.AsyncClient(base_url=srv.url) as http:
        pc, sdp = await client_offer()
        try:
            token = (await http.post("/webrtc/session")).json()["token"]
            resp = await http.post("/webrtc/offer", json=body(sdp, token))
            assert resp.status_code == 200, resp.text
            answer = resp.json()
            assert answer["type"] == "answer"
            assert answer["call_id"].startswith("web-")
            assert "a=candidate:" in answer["sdp"] and "127.0.0.1" in answer["sdp"]
            assert "opus/48000/2" in answer["sdp"]
            manager: WebRtcManager = srv.ctx.webrtc
            assert list(manager.calls) == [answer["call_id"]]
            # The same token cannot open a second call.
            again = await http.post("/webrtc/offer", json=body(sdp, token))
            assert again.status_code == 401 and again.json()["error"] == "used_token"
        finally:
            await pc.close()
    # server shutdown closed the call that never connected
    assert manager.calls == {}


async def test_unconnected_peer_is_dropped_after_the_connect_timeout(
    server_factory, loopback_ice
) -> None:
    async with (
        server_factory(connect_timeout_s=1.0) as srv,
        httpx.AsyncClient(base_url=srv.url) as http,
    ):
        pc, sdp = await client_offer()
        try:
            token = (await http.post("/webrtc/session")).json()["token"]
            resp = await http.post("/webrtc/offer", json=body(sdp, token))
            assert resp.status_code == 200
            manager: WebRtcManager = srv.ctx.webrtc
            assert len(manager.calls) == 1
            for _ in range(40):
                if not manager.calls:
                    break
                await asyncio.sleep(0.1)
            assert manager.calls == {}
        finally:
            await pc.close()


async def test_bad_requests_get_clear_4xx_never_500(server_factory) -> None:
    async with server_factory() as srv, httpx.AsyncClient(base_url=srv.url) as http:
        token = (await http.post("/webrtc/session")).json()["token"]
        cases = [
            (b"not json", 400, "bad_request"),
            (b'{"sdp": "hello", "type": "offer"}', 400, "bad_sdp"),
            (b'{"sdp": "v=0", "type": "offer", "token": "x"}', 400, "bad_sdp"),
        ]
        for content, status, code in cases:
            resp = await http.post("/webrtc/offer", content=content)
            assert (resp.status_code, resp.json()["error"]) == (status, code), content
            assert resp.json()["message"]
        forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
        resp = await http.post(
            "/webrtc/offer", json={"sdp": CHROME_OFFER, "type": "offer", "token": forged}
        )
        assert (resp.status_code, resp.json()["error"]) == (401, "bad_token")
        # Offers that pass the checks but make aiortc fail part-way: still a 400, not a 500.
        for broken in (
            CHROME_OFFER.replace("a=setup:actpass", "a=setup:bogus"),
            CHROME_OFFER.replace("a=mid:0\r\n", ""),
        ):
            token = (await http.post("/webrtc/session")).json()["token"]
            resp = await http.post(
                "/webrtc/offer", json={"sdp": broken, "type": "offer", "token": token}
            )
            assert (resp.status_code, resp.json()["error"]) == (400, "bad_sdp")
        assert srv.ctx.webrtc.calls == {}


async def test_expired_token_gets_401(server_factory) -> None:
    async with server_factory(token_ttl_s=1) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        token = (await http.post("/webrtc/session")).json()["token"]
        await asyncio.sleep(2.1)
        resp = await http.post(
            "/webrtc/offer", json={"sdp": CHROME_OFFER, "type": "offer", "token": token}
        )
        assert resp.status_code == 401
        assert resp.json()["error"] == "expired_token"


async def test_per_ip_rate_limit(server_factory) -> None:
    async with (
        server_factory(offers_per_minute=3) as srv,
        httpx.AsyncClient(base_url=srv.url) as http,
    ):
        statuses = [(await http.post("/webrtc/session")).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        resp = await http.post("/webrtc/offer", json={})
        assert resp.status_code == 429
        assert int(resp.headers["retry-after"]) >= 1


@contextlib.asynccontextmanager
async def two_offers(
    http: httpx.AsyncClient,
) -> AsyncIterator[tuple[httpx.Response, httpx.Response]]:
    """Two callers, each with its own session token, offer one after the other: the answers
    to the first and the second offer. Both peers are closed afterwards."""
    first, sdp1 = await client_offer()
    second, sdp2 = await client_offer()
    try:
        t1 = (await http.post("/webrtc/session")).json()["token"]
        t2 = (await http.post("/webrtc/session")).json()["token"]
        ok = await http.post("/webrtc/offer", json=body(sdp1, t1))
        busy = await http.post("/webrtc/offer", json=body(sdp2, t2))
        yield ok, busy
    finally:
        await first.close()
        await second.close()


async def test_cap_on_concurrent_web_calls(server_factory, loopback_ice) -> None:
    async with server_factory(max_calls=1) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        async with two_offers(http) as (ok, busy):
            assert ok.status_code == 200
            assert busy.status_code == 503 and busy.json()["error"] == "busy"
            assert busy.headers["retry-after"]
            assert (await http.post("/webrtc/session")).status_code == 503


async def test_draining_server_refuses_new_web_calls(server_factory) -> None:
    async with server_factory() as srv, httpx.AsyncClient(base_url=srv.url) as http:
        srv.ctx.calls.draining = True
        resp = await http.post("/webrtc/session")
        assert resp.status_code == 503 and resp.json()["error"] == "draining"


async def test_a_worker_at_its_own_cap_takes_web_calls_while_its_machine_has_room(
    server_factory, monkeypatch
) -> None:
    monkeypatch.setenv(workers.COUNT_ENV, "2")  # this worker is one of two on its machine
    settings = dataclasses.replace(make_settings(), server=ServerSettings(max_concurrent_calls=1))
    async with (
        server_factory(settings=settings) as srv,
        httpx.AsyncClient(base_url=srv.url) as http,
    ):
        phone = CallInfo("CA" + "5" * 32, "twilio")
        srv.ctx.calls.add(phone, object())  # this worker is at its own cap of one call ...
        await srv.ctx.admission.heartbeat([phone.call_id], 30.0)  # ... which holds a slot
        try:
            async with two_offers(http) as (ok, busy):
                assert ok.status_code == 200, ok.text  # the machine's second slot
                assert busy.status_code == 503 and busy.json()["error"] == "busy"  # 2 of 2 taken
        finally:
            srv.ctx.calls.remove(phone.call_id)
