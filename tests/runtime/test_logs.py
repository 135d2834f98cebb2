"""Structured logs: every secret setting and every phone number is masked on the way out."""

from __future__ import annotations

import io
import json
import logging

from app.config import Settings
from app.logs import JsonFormatter, bind_call, event, mask_phone
from app.main import register_secrets


def test_every_secret_setting_is_masked_in_log_lines() -> None:
    secrets = {
        "TWILIO_AUTH_TOKEN": "twilio-token-123456",
        "DEEPGRAM_API_KEY": "dg-key-123456",
        "ANTHROPIC_API_KEY": "sk-ant-123456",
        "ELEVENLABS_API_KEY": "xi-key-123456",
        "API_TOKEN": "api-token-123456",
        "METRICS_TOKEN": "metrics-token-123456",
        "POST_CALL_WEBHOOK_SECRET": "hook-secret-123456",
        "WEBRTC_TOKEN_SECRET": "webrtc-secret-123456",
    }
    settings = Settings.from_env(
        {**secrets, "DATABASE_URL": "postgresql://voice:db-password-123@127.0.0.1/x"}
    )
    register_secrets(settings)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("test.secrets")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with bind_call("CA123"):
            event(
                log,
                "leak",
                detail=" ".join(secrets.values()) + " db-password-123",
                caller="+14155550123",
            )
    finally:
        log.removeHandler(handler)
    line = out.getvalue()
    for value in [*secrets.values(), "db-password-123", "4155550123"]:
        assert value not in line
    record = json.loads(line)
    assert record["call_id"] == "CA123" and record["caller"].endswith("23")


def test_mask_phone_keeps_country_and_last_two_digits() -> None:
    assert mask_phone("+14155550123") == "+1********23"
    assert mask_phone(None) == "-"
