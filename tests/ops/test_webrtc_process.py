"""A web call to a real ``voice-agent serve``: aiortc's ICE, DTLS and RTP on the server's
uvloop event loop (the in-process WebRTC tests run on pytest's standard loop)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.ops.serverproc import start_server
from tests.webrtc.peer import CallerPeer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


async def test_a_web_call_on_the_servers_uvloop_hears_the_greeting(tmp_path: Path) -> None:
    server = await start_server(tmp_path, WEBRTC_CONNECT_TIMEOUT_S="60")
    caller: CallerPeer | None = None
    try:
        assert '"loop": "uvloop"' in server.log(), server.log()[-3000:]
        async with httpx.AsyncClient(timeout=30) as http:
            caller = CallerPeer(server.url)
            await caller.connect(http)
            start = asyncio.get_running_loop().time()
            greeting = await caller.wait_caption("agent", "help", within=60)
            assert greeting["interrupted"] is False
            # the greeting arrived as audio too, paced over its length, not one burst
            quiet_at = await caller.wait_silence(within=60)
            assert caller.audible_between(start, quiet_at) * 0.02 > 1.0
    finally:
        if caller is not None:
            await caller.close()
        await server.stop()
    assert "Traceback" not in server.log(), server.log()[-3000:]
