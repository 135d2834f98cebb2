"""``voice-agent serve --workers 2`` on one PostgreSQL database: two real worker processes
sharing the port, as on one machine of the deployment.

Each request goes out on a new connection, so the kernel spreads them over both workers; the
``X-Worker`` header says which one answered. Admission, web-call tokens and one metrics scrape
must be right whichever worker a request reaches.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiortc import RTCPeerConnection
from websockets.asyncio.client import connect

from tests.ops.serverproc import ServerProcess, start_server
from tests.store.pg import pg_url  # noqa: F401 - fixture

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PER_WORKER = 2  # MAX_CONCURRENT_CALLS: the machine takes 2 x 2


async def fresh(server: ServerProcess, method: str, path: str, **kw: object) -> httpx.Response:
    """One request on a connection of its own (a new source port: any worker may take it)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        return await client.request(method, path, **kw)  # type: ignore[arg-type]


def call_sid(n: int) -> str:
    return f"CA{n:032x}"


async def webhook(server: ServerProcess, n: int) -> tuple[str, str, dict[str, str]]:
    """(first TwiML verb, worker, stream parameters) for an inbound call's webhook."""
    fields = {"CallSid": call_sid(n), "AccountSid": "AC" + "0" * 32, "From": "+15550100",
              "To": "+15550199", "Direction": "inbound", "CallStatus": "ringing"}
    resp = await fresh(server, "POST", "/twilio/voice", data=fields)
    assert resp.status_code == 200, resp.text
    root = ET.fromstring(resp.text)
    params = {p.get("name", ""): p.get("value", "") for p in root.iter("Parameter")}
    return root[0].tag, resp.headers["x-worker"], params


async def until_both_workers(server: ServerProcess) -> None:
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while seen != {"0", "1"}:
        assert time.monotonic() < deadline, f"only workers {seen} answered:\n{server.log()[-3000:]}"
        resp = await fresh(server, "GET", "/health")
        if resp.status_code == 200:
            seen.add(resp.headers["x-worker"])
        else:
            await asyncio.sleep(0.2)


async def scrape(server: ServerProcess) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{server.metrics_port}/metrics")).text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(voice_agent_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if m:
            samples[m.group(1)] = float(m.group(2))
    return samples


async def clients_by_worker(server: ServerProcess) -> dict[str, httpx.AsyncClient]:
    """A kept-alive connection to each worker (a connection stays with the worker that
    accepted it)."""
    found: dict[str, httpx.AsyncClient] = {}
    spare: list[httpx.AsyncClient] = []
    try:
        for _ in range(40):
            client = httpx.AsyncClient(base_url=server.url, timeout=30)
            worker = (await client.get("/health")).headers["x-worker"]
            if worker in found:
                spare.append(client)
            else:
                found[worker] = client
            if len(found) == 2:
                return found
        raise AssertionError(f"40 connections reached only workers {sorted(found)}")
    finally:
        for client in spare:
            await client.aclose()


async def web_offer_sdp() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def test_two_workers_share_admission_tokens_and_metrics(
    tmp_path: Path, pg_url: str  # noqa: F811 - fixture
) -> None:
    server = await start_server(
        tmp_path, WORKERS="2", DATABASE_URL=pg_url, MAX_CONCURRENT_CALLS=str(PER_WORKER),
        WEBRTC_CONNECT_TIMEOUT_S="60",
    )
    pc: RTCPeerConnection | None = None
    try:
        await until_both_workers(server)
        assert server.log().count('"loop": "uvloop"') == 2, server.log()[-3000:]  # each worker

        # A web call: the token worker 0 issued is redeemed by worker 1, and only once.
        by_worker = await clients_by_worker(server)
        try:
            resp = await by_worker["0"].post("/webrtc/session")
            assert resp.status_code == 200 and resp.headers["x-worker"] == "0", resp.text
            token = resp.json()["token"]
            pc, sdp = await web_offer_sdp()
            offer = {"sdp": sdp, "type": "offer", "token": token}
            resp = await by_worker["1"].post("/webrtc/offer", json=offer)
            assert resp.status_code == 200 and resp.headers["x-worker"] == "1", resp.text
            for worker in ("0", "1"):
                replay = await by_worker[worker].post("/webrtc/offer", json=offer)
                assert replay.status_code == 401, replay.text
                assert replay.json()["error"] == "used_token"
        finally:
            for client in by_worker.values():
                await client.aclose()

        # Twilio webhooks: the machine takes 2 x 2 calls; the web call's slot is one of them.
        verbs: list[tuple[str, str]] = []
        params: dict[int, dict[str, str]] = {}
        for n in range(1, 13):
            verb, worker, p = await webhook(server, n)
            verbs.append((verb, worker))
            if verb == "Connect":
                params[n] = p
        assert [v for v, _ in verbs] == ["Connect"] * 3 + ["Say"] * 9, verbs
        busy_by = Counter(w for v, w in verbs if v == "Say")
        assert set(busy_by) == {"0", "1"}, busy_by  # both workers know the machine is full
        assert (await webhook(server, 1))[0] == "Connect"  # a retried webhook keeps its slot

        # One scrape, either worker: both workers' counts, summed.
        for _ in range(3):
            m = await scrape(server)
            assert m['voice_agent_calls_rejected_total{reason="full",transport="twilio"}'] == 9
            assert m["voice_agent_call_capacity"] == 2 * PER_WORKER

        # Call 1's stream starts and ends on whichever worker: its slot is free again.
        async with connect(server.url.replace("http", "ws") + "/twilio/media") as ws:
            stream = "MZ" + "1" * 32
            connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
            await ws.send(json.dumps(connected))
            await ws.send(json.dumps({
                "event": "start", "sequenceNumber": "1", "streamSid": stream,
                "start": {"accountSid": "AC" + "0" * 32, "streamSid": stream,
                          "callSid": call_sid(1), "tracks": ["inbound"],
                          "customParameters": params[1],
                          "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                          "channels": 1}},
            }))
            await ws.recv()  # the greeting's first frame: the call is live
            m = await scrape(server)  # from whichever worker, the one running it counts it
            assert m['voice_agent_active_calls{transport="twilio"}'] == 1
            # Both workers list it live (the dashboard's view comes from the store).
            by_worker = await clients_by_worker(server)
            try:
                deadline = time.monotonic() + 10
                for client in by_worker.values():
                    while True:
                        live = (await client.get("/api/live")).json()
                        if [c["id"] for c in live["calls"]] == [call_sid(1)]:
                            break
                        assert time.monotonic() < deadline, json.dumps(live)
                        await asyncio.sleep(0.1)
                    assert live["capacity"] == 2 * PER_WORKER
                    assert live["calls"][0]["from"] != "+15550100"  # masked
            finally:
                for client in by_worker.values():
                    await client.aclose()
            await ws.send(json.dumps({"event": "stop", "sequenceNumber": "2",
                                      "streamSid": stream, "stop": {"accountSid": "AC" + "0" * 32,
                                               "callSid": call_sid(1)}}))
        deadline = time.monotonic() + 20
        n = 100
        while (await webhook(server, n))[0] != "Connect":
            assert time.monotonic() < deadline, "the ended call's slot was never freed"
            n += 1
            await asyncio.sleep(0.2)

        # One sweeper for the whole machine: a worker of it holds the lease (the dialler's
        # lease works the same way; it runs only with Twilio credentials).
        conn = await asyncpg.connect(pg_url)
        try:
            rows = await conn.fetch("SELECT name, holder FROM leases")
        finally:
            await conn.close()
        pids = {int(p) for p in re.findall(r'"worker_started".*?"pid": (\d+)', server.log())}
        assert len(pids) == 2
        assert [r["name"] for r in rows] == ["zombie-sweep"]
        assert int(rows[0]["holder"].rsplit(":", 1)[1]) in pids

        # A worker that dies is replaced; the other answers meanwhile. (A connection the
        # kernel had already queued on the dead worker's socket is reset: tolerated here.)
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 120
        answered = 0
        while server.log().count('"worker_started"') < 3:
            assert time.monotonic() < deadline, server.log()[-3000:]
            try:
                answered += (await fresh(server, "GET", "/health")).status_code == 200
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        assert answered > 0
        assert '"worker_exited"' in server.log()
        await until_both_workers(server)
    finally:
        if pc is not None:
            await pc.close()
        server.signal()  # SIGTERM to the parent: every worker drains and exits
        code = await server.wait(60)
        if code is None:
            await server.stop()
    assert code == 0, server.log()[-3000:]
    assert server.log().count('"worker_stopped"') == 2  # the replacement drained too
