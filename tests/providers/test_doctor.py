"""``voice-agent doctor`` against the three fakes: the real SDK requests, readable results."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Settings
from app.doctor import diagnose, explain
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.asgi import LoopbackServer
from tests.fakes.deepgram_server import DeepgramFake
from tests.fakes.elevenlabs_server import ElevenLabsFake

ROOT = Path(__file__).resolve().parents[2]
DG, AN, EL = "dg-doctor-key-1", "sk-ant-doctor-key-2", "xi-doctor-key-3"


@pytest.fixture
async def urls():
    anthropic, elevenlabs = AnthropicFake(api_key=AN), ElevenLabsFake(api_key=EL)
    async with (
        DeepgramFake(api_key=DG) as dg,
        LoopbackServer(anthropic.app()) as an,
        LoopbackServer(elevenlabs.app()) as el,
    ):
        yield {
            "DEEPGRAM_URL": dg.ws_url,
            "ANTHROPIC_BASE_URL": an.url,
            "ELEVENLABS_BASE_URL": el.url,
        }


def lines(checks) -> dict[str, tuple[bool, str]]:
    return {c.what: (c.ok, c.detail) for c in checks}


async def test_all_keys_good(urls):
    env = {"DEEPGRAM_API_KEY": DG, "ANTHROPIC_API_KEY": AN, "ELEVENLABS_API_KEY": EL, **urls}
    got = lines(await diagnose(Settings.from_env(env)))
    assert got["stt"] == (True, "deepgram (auto: key set)")
    assert got["llm"] == (True, "anthropic (auto: key set)")
    assert got["tts"] == (True, "elevenlabs (auto: key set)")
    assert got["key DEEPGRAM_API_KEY"][0] and "1 project(s)" in got["key DEEPGRAM_API_KEY"][1]
    assert got["key ANTHROPIC_API_KEY"][0] and "claude-haiku-4-5" in got["key ANTHROPIC_API_KEY"][1]
    assert got["key ELEVENLABS_API_KEY"][0]


async def test_each_failure_is_one_clear_line(urls):
    env = {
        "DEEPGRAM_API_KEY": "wrong-key-aaaa",
        "ANTHROPIC_API_KEY": AN,
        "ANTHROPIC_MODEL": "claude-does-not-exist",
        "ELEVENLABS_API_KEY": EL,
        "ELEVENLABS_BASE_URL": "http://127.0.0.1:9",  # nothing listens there
        "DEEPGRAM_URL": urls["DEEPGRAM_URL"],
        "ANTHROPIC_BASE_URL": urls["ANTHROPIC_BASE_URL"],
        "TTS_PROVIDER": "local",
    }
    checks = await diagnose(Settings.from_env(env))
    got = lines(checks)
    assert got["tts"] == (True, "espeak (TTS_PROVIDER=local)")
    assert got["key DEEPGRAM_API_KEY"] == (False, "key rejected (HTTP 401): check the key")
    assert (
        got["key ANTHROPIC_API_KEY"][0] is False and "HTTP 404" in got["key ANTHROPIC_API_KEY"][1]
    )
    assert got["key ELEVENLABS_API_KEY"][0] is False
    assert got["key ELEVENLABS_API_KEY"][1].startswith("cannot reach the service")
    for check in checks:
        assert "wrong-key-aaaa" not in check.line() and "Traceback" not in check.line()


async def test_no_keys_means_local():
    got = lines(await diagnose(Settings.from_env({})))
    assert got["stt"][1].startswith("whisper") and got["keys"][0]


def test_explain_timeouts_and_bad_urls():
    assert explain(TimeoutError()).startswith("no answer within")
    assert "DEEPGRAM_URL" in explain(ValueError("DEEPGRAM_URL must be a ws:// or wss:// URL"))


async def test_the_road_to_a_live_line_is_checked(tmp_path):
    """Twilio credentials, PUBLIC_URL, the database, the agents file and TURN: each a line."""
    import asyncio
    import socket

    from tests.fakes.twilio_numbers import FakeTwilioNumbers

    def closed_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    open_port = listener.sockets[0].getsockname()[1]
    with FakeTwilioNumbers() as fake:
        env = {
            "TWILIO_ACCOUNT_SID": fake.account_sid,
            "TWILIO_AUTH_TOKEN": fake.auth_token,
            "TWILIO_API_BASE_URL": fake.base_url,
            "PUBLIC_URL": f"https://127.0.0.1:{closed_port()}",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'doctor.db'}",
            "AGENTS_FILE": str(ROOT / "agents.toml"),
            "WEBRTC_TURN_URLS": f"turn:127.0.0.1:{open_port},turn:127.0.0.1:{closed_port()}",
            "WEBRTC_TURN_SECRET": "turn-secret",
        }
        good = lines(await diagnose(Settings.from_env(env)))
        wrong = lines(await diagnose(Settings.from_env({
            **env, "TWILIO_AUTH_TOKEN": "wrong-token-zzz",
            "DATABASE_URL": f"postgres://app@127.0.0.1:{closed_port()}/calls",
        })))
    listener.close()
    assert good["twilio credentials"] == (True, "account 'Test account' is active")
    assert good["PUBLIC_URL"][0] is False and "cannot reach" in good["PUBLIC_URL"][1]
    assert good["database"] == (True, "sqlite opens and has the current schema")
    assert good["agents file"][0] and "reception" in good["agents file"][1]
    turns = {k: v for k, v in good.items() if k.startswith("turn ")}
    assert sorted(ok for ok, _ in turns.values()) == [False, True]
    assert wrong["twilio credentials"] == (False, "key rejected (HTTP 401): check the key")
    assert wrong["database"][0] is False and "nothing is listening" in wrong["database"][1]


async def test_a_forced_cloud_provider_without_its_key_fails():
    got = lines(await diagnose(Settings.from_env({"TTS_PROVIDER": "elevenlabs"})))
    assert got["tts"] == (False, "TTS_PROVIDER=elevenlabs needs ELEVENLABS_API_KEY")
