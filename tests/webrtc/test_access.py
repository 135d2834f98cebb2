"""Who may start a web call, and how often: per-client limits behind a proxy, calls closed to
the public once they spend credits, and a daily cap shared through the store."""

from __future__ import annotations

import dataclasses

import httpx

from app.config import ServerSettings, Settings, StoreSettings, WebRtcSettings
from app.core.providers import CallInfo
from app.store import Store


def settings_with(server: ServerSettings | None = None, **webrtc) -> Settings:
    base = Settings()
    return dataclasses.replace(
        base, server=server or base.server, webrtc=WebRtcSettings(**webrtc)
    )


async def test_behind_fly_each_caller_has_its_own_bucket(server_factory) -> None:
    settings = settings_with(ServerSettings(on_fly=True, trusted_proxies=()), offers_per_minute=2)
    async with server_factory(settings=settings) as srv, httpx.AsyncClient(base_url=srv.url) as h:
        # 127.0.0.1 stands for fly's proxy here (a private peer); it names each client
        a = {"Fly-Client-IP": "203.0.113.1"}
        b = {"Fly-Client-IP": "203.0.113.2"}
        codes_a = [(await h.post("/webrtc/session", headers=a)).status_code for _ in range(3)]
        assert codes_a == [200, 200, 429]
        assert (await h.post("/webrtc/session", headers=b)).status_code == 200


async def test_a_forged_forwarding_header_gets_no_fresh_bucket(server_factory) -> None:
    settings = settings_with(offers_per_minute=3)
    async with server_factory(settings=settings) as srv, httpx.AsyncClient(base_url=srv.url) as h:
        codes = [
            (await h.post("/webrtc/session", headers={"X-Forwarded-For": f"198.51.100.{i}"}))
            .status_code
            for i in range(10)
        ]
    assert codes.count(200) == 3 and codes[3:] == [429] * 7


async def test_web_calls_closed_to_the_public_need_the_operators_token(server_factory) -> None:
    settings = dataclasses.replace(settings_with(public=False), ops=dataclasses.replace(
        Settings().ops, api_token="op-token"))
    remote = {"X-Forwarded-For": "198.51.100.4"}  # relayed: not a direct loopback peer
    async with server_factory(settings=settings) as srv, httpx.AsyncClient(base_url=srv.url) as h:
        refused = await h.post("/webrtc/session", headers=remote)
        assert refused.status_code == 401 and refused.json()["error"] == "not_public"
        wrong = await h.post("/webrtc/session", headers={**remote, "Authorization": "Bearer no"})
        assert wrong.status_code == 401
        ok = await h.post(
            "/webrtc/session", headers={**remote, "Authorization": "Bearer op-token"}
        )
        assert ok.status_code == 200 and ok.json()["token"]
        assert (await h.post("/webrtc/session")).status_code == 200  # the operator's own machine


async def test_the_daily_cap_counts_every_instances_calls(server_factory, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    other_instance = await Store.open(url)
    try:
        from app.store import CallRecordObserver

        async def web_call_elsewhere(call_id: str) -> None:
            observer = CallRecordObserver(other_instance.db)
            observer.start()
            observer.open_call(CallInfo(call_id=call_id, transport="webrtc"))
            await observer.aclose()

        await web_call_elsewhere("web-elsewhere")
        settings = dataclasses.replace(
            settings_with(daily_cap=2), store=StoreSettings(database_url=url)
        )
        async with (
            server_factory(settings=settings) as srv,
            httpx.AsyncClient(base_url=srv.url) as h,
        ):
            assert (await h.post("/webrtc/session")).status_code == 200  # 1 of 2 used
            await web_call_elsewhere("web-second")
            full = await h.post("/webrtc/session")
            assert full.status_code == 503 and full.json()["error"] == "daily_cap"
    finally:
        await other_instance.close()
