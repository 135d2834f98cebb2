"""``voice-agent configure-number`` against a local fake of Twilio's IncomingPhoneNumbers API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.cli import main
from tests.fakes.twilio_numbers import FakeTwilioNumbers

NUMBER = "+14155550123"
PUBLIC = "https://agent.example.test"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTwilioNumbers]:
    with FakeTwilioNumbers() as fake:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", fake.account_sid)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", fake.auth_token)
        monkeypatch.setenv("TWILIO_API_BASE_URL", fake.base_url)
        monkeypatch.setenv("PUBLIC_URL", PUBLIC + "/")
        yield fake


def updates(fake: FakeTwilioNumbers) -> list:
    return [r for r in fake.requests if r.method == "POST"]


def test_points_the_number_at_public_url(fake: FakeTwilioNumbers, capsys) -> None:
    other = fake.add_number("+14155550199")
    record = fake.add_number(NUMBER, voice_application_sid="AP" + "2" * 32)

    assert main(["configure-number", "+1 (415) 555-0123"]) == 0

    assert record["voice_url"] == f"{PUBLIC}/twilio/voice"
    assert record["voice_method"] == "POST"
    assert record["status_callback"] == f"{PUBLIC}/twilio/status"
    assert record["status_callback_method"] == "POST"
    assert record["voice_fallback_url"] == f"{PUBLIC}/twilio/fallback"
    assert record["voice_fallback_method"] == "POST"
    # a linked TwiML App would make Twilio ignore VoiceUrl, so it is cleared
    assert record["voice_application_sid"] is None
    assert other["voice_url"] == "https://demo.twilio.com/welcome/voice/"  # untouched
    listing = fake.requests[0]
    assert listing.method == "GET" and listing.query["PhoneNumber"] == NUMBER
    assert [u.path.rsplit("/", 1)[-1] for u in updates(fake)] == [f"{record['sid']}.json"]
    out = capsys.readouterr().out
    assert "points here      yes" in out
    assert NUMBER not in out  # masked on screen too


def test_show_changes_nothing_and_says_whether_it_points_here(
    fake: FakeTwilioNumbers, capsys
) -> None:
    fake.add_number(NUMBER)
    assert main(["configure-number", NUMBER, "--show"]) == 0
    out = capsys.readouterr().out
    assert "https://demo.twilio.com/welcome/voice/" in out
    assert "points here      NO" in out
    assert not updates(fake)

    assert main(["configure-number", NUMBER]) == 0
    capsys.readouterr()
    assert main(["configure-number", NUMBER, "--show"]) == 0
    assert "points here      yes" in capsys.readouterr().out


def test_unknown_number_is_a_clear_error(fake: FakeTwilioNumbers, capsys) -> None:
    fake.add_number("+14155550199")
    assert main(["configure-number", NUMBER]) == 2
    err = capsys.readouterr().err
    assert "is not a number of account" in err
    assert not updates(fake)


def test_wrong_credentials_report_twilio_error_without_the_token(
    fake: FakeTwilioNumbers, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    fake.add_number(NUMBER)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong-token-abcdef")
    assert main(["configure-number", NUMBER]) == 1
    captured = capsys.readouterr()
    assert "401" in captured.err and "20003" in captured.err
    assert "Twilio refused the credentials" in captured.err
    assert "could not reach" not in captured.err
    assert "wrong-token-abcdef" not in captured.err + captured.out


@pytest.mark.parametrize(
    ("public_url", "message"),
    [
        ("http://agent.example.test", "must start with https://"),
        (None, "PUBLIC_URL is not set"),
    ],
)
def test_public_url_must_be_https(
    fake: FakeTwilioNumbers, monkeypatch: pytest.MonkeyPatch, capsys, public_url, message
) -> None:
    fake.add_number(NUMBER)
    if public_url is None:
        monkeypatch.delenv("PUBLIC_URL")
    else:
        monkeypatch.setenv("PUBLIC_URL", public_url)
    assert main(["configure-number", NUMBER]) == 2
    assert message in capsys.readouterr().err
    assert not updates(fake)


def test_not_a_phone_number(fake: FakeTwilioNumbers, capsys) -> None:
    assert main(["configure-number", "4155550123"]) == 2  # no country code
    assert "E.164" in capsys.readouterr().err
    assert fake.requests == []


def test_an_api_key_and_secret_work_instead_of_the_auth_token(
    fake: FakeTwilioNumbers, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    record = fake.add_number(NUMBER)
    fake.api_keys["SK" + "3" * 32] = "key-secret-xyz"
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    monkeypatch.setenv("TWILIO_API_KEY", "SK" + "3" * 32)
    monkeypatch.setenv("TWILIO_API_SECRET", "key-secret-xyz")
    assert main(["configure-number", NUMBER]) == 0
    assert record["voice_url"] == f"{PUBLIC}/twilio/voice"
    assert "key-secret-xyz" not in capsys.readouterr().out


def test_a_sip_trunk_number_is_a_failure_not_a_warning(fake: FakeTwilioNumbers, capsys) -> None:
    fake.add_number(NUMBER, trunk_sid="TK" + "4" * 32)
    assert main(["configure-number", NUMBER]) == 3
    err = capsys.readouterr().err
    assert "SIP trunk" in err and "remove it from the trunk" in err
