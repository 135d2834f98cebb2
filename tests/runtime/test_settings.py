"""Settings as a new user meets them: the .env file, values that must be refused at start-up,
and the multi-instance rule."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from app.config import ConfigError, Settings, environment

ROOT = Path(__file__).resolve().parents[2]


def test_dotenv_in_the_working_directory_is_read_and_the_environment_wins(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(
        "# a comment\n"
        "TWILIO_AUTH_TOKEN=from-the-file\n"
        "AGENT_GREETING=Hello there, this is Ava\n"  # unquoted, with spaces
        'AGENT_NAME="Ava Smith"\n'
        "export PORT=9090\n"
        "MAX_CONCURRENT_CALLS=7\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAX_CONCURRENT_CALLS", "5")
    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    settings = Settings.from_env()
    assert settings.twilio.auth_token == "from-the-file"
    assert settings.agent.greeting == "Hello there, this is Ava"
    assert settings.agent.name == "Ava Smith"
    assert settings.server.port == 9090
    assert settings.server.max_concurrent_calls == 5  # the environment wins


def test_dotenv_values_are_validated_like_the_environment(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("PORT=eighty\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PORT", raising=False)
    with pytest.raises(ConfigError, match="PORT must be a whole number"):
        Settings.from_env()


def test_no_dotenv_means_the_environment_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENT_NAME", "Zed")
    assert environment()["AGENT_NAME"] == "Zed"


def test_env_example_loads_in_a_shell_and_in_the_app(tmp_path, monkeypatch):
    """`set -a; . .env` must work too: values with spaces are quoted in the example."""
    example = ROOT / ".env.example"
    out = subprocess.run(
        ["bash", "-c", f'set -euo pipefail; set -a; . "{example}"; printf %s "$AGENT_GREETING"'],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
    )
    (tmp_path / ".env").write_text(example.read_text())
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env(environment())
    assert out.stdout == settings.agent.greeting
    assert settings.agent.greeting.startswith("Hello")


@pytest.mark.parametrize(
    "key", ["IDLE_TIMEOUT_S", "MAX_CALL_S", "DRAIN_TIMEOUT_S", "TWILIO_CPS", "LLM_FILLER_AFTER_S"]
)
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf"])
def test_nan_and_infinity_are_refused(key, value):
    with pytest.raises(ConfigError, match=f"{key} must be a finite number"):
        Settings.from_env({key: value})


def test_allowed_countries_must_exist():
    with pytest.raises(ConfigError, match="unknown: XX, ZZ"):
        Settings.from_env({"ALLOWED_COUNTRIES": "US,XX,ZZ"})
    assert Settings.from_env({"ALLOWED_COUNTRIES": "gb,de"}).outbound.allowed_countries == (
        "GB", "DE",
    )


def test_api_key_and_secret_go_together():
    with pytest.raises(ConfigError, match="TWILIO_API_KEY and TWILIO_API_SECRET"):
        Settings.from_env({"TWILIO_API_KEY": "SK123"})


def test_trusted_proxies_must_be_networks():
    settings = Settings.from_env({"TRUSTED_PROXIES": "10.0.0.1, 172.16.0.0/12"})
    assert settings.server.trusted_proxies == ("10.0.0.1/32", "172.16.0.0/12")
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        Settings.from_env({"TRUSTED_PROXIES": "proxy.local"})


SHARED = {
    "DATABASE_URL": "postgres://u:p@db.internal:5432/app?sslmode=disable",
    "WEBRTC_TOKEN_SECRET": "s" * 32,
}


def test_on_fly_several_instances_need_shared_state():
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"FLY_APP_NAME": "voice"})
    message = str(err.value)
    assert "DATABASE_URL" in message and "WEBRTC_TOKEN_SECRET" in message
    assert "fly postgres attach" in message
    settings = Settings.from_env({"FLY_APP_NAME": "voice", **SHARED})
    assert settings.server.multi_instance and settings.server.on_fly
    # one machine, said explicitly
    assert not Settings.from_env({"FLY_APP_NAME": "voice", "MULTI_INSTANCE": "false"}).server \
        .multi_instance


def test_public_web_calls_default_off_once_credits_are_spent():
    assert Settings.from_env({}).webrtc.public is True
    assert Settings.from_env({"ANTHROPIC_API_KEY": "k"}).webrtc.public is False
    assert Settings.from_env({"TTS_PROVIDER": "elevenlabs"}).webrtc.public is False
    assert Settings.from_env({"ANTHROPIC_API_KEY": "k", "WEBRTC_PUBLIC": "true"}).webrtc.public


def test_deploys_hand_calls_over_where_there_is_another_instance():
    assert Settings.from_env({}).server.drain_handover is False  # one machine: wait, as before
    assert Settings.from_env({"FLY_APP_NAME": "voice", **SHARED}).server.drain_handover
    assert not Settings.from_env(
        {"FLY_APP_NAME": "voice", **SHARED, "DRAIN_HANDOVER": "false"}
    ).server.drain_handover
