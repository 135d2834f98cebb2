"""A new user's first start: the repository's own files start, and a mistake is one clear line
(which setting, which part), never a traceback. Real processes."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.ops.serverproc import ROOT, free_port, run_to_exit, start_server

pytestmark = pytest.mark.slow


async def test_the_repositorys_agents_file_and_a_british_voice_start(tmp_path):
    agents = str(ROOT / "agents.toml")
    server = await start_server(tmp_path, ESPEAK_VOICE="en-gb", AGENTS_FILE=agents)
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(server.url + "/health")).json()["status"] == "ok"
        server.signal(signal.SIGTERM)  # no calls: the drain ends at once
        assert await server.wait(30) == 0
    finally:
        await server.stop()
    assert "Traceback" not in server.log()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ESPEAK_VOICE": "xx-nowhere"}, "unknown eSpeak voice 'xx-nowhere'"),
        ({"DATABASE_URL": "postgres://app:pw@127.0.0.1:{port}/calls?sslmode=disable"},
         "nothing is listening at 127.0.0.1:{port}"),
        ({"STT_PROVIDER": "deepgram"}, "STT_PROVIDER=deepgram needs DEEPGRAM_API_KEY"),
        ({"IDLE_TIMEOUT_S": "nan"}, "IDLE_TIMEOUT_S must be a finite number"),
    ],
    ids=["voice", "database", "forced-cloud-without-key", "nan"],
)
async def test_a_mistake_is_one_clear_line(tmp_path, env, expected):
    port = free_port()
    env = {k: v.format(port=port) for k, v in env.items()}
    code, out = await run_to_exit(tmp_path, **env)
    assert code == 2, out
    assert expected.format(port=port) in out
    assert "Traceback" not in out
    assert "pw@" not in out
