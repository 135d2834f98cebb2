"""``voice-agent doctor`` against the three fakes: the real SDK requests, readable results."""

from __future__ import annotations

import pytest

from app.config import Settings
from app.doctor import diagnose, explain
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.asgi import LoopbackServer
from tests.fakes.deepgram_server import DeepgramFake
from tests.fakes.elevenlabs_server import ElevenLabsFake

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
