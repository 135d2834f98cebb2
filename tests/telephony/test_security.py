"""Signed-URL reconstruction, signature checks and stream tokens."""

from __future__ import annotations

import pytest
from twilio.request_validator import RequestValidator

from telephony.security import (
    SignatureChecker,
    StreamTokens,
    TokenCheck,
    is_loopback,
    public_url,
    stream_url,
)

TOKEN = "0123456789abcdef0123456789abcdef"
CALL = "CA" + "ab" * 16
PARAMS = [("CallSid", CALL), ("From", "+14155550100"), ("To", "+14155550199")]


def sign(url: str, params: dict | None = None, token: str = TOKEN) -> str:
    # What Twilio puts in X-Twilio-Signature (computed by the twilio package itself).
    return RequestValidator(token).compute_signature(url, params or {})


# --------------------------------------------------------------------------- public_url


def test_public_url_prefers_configured_base() -> None:
    url = public_url(
        "/twilio/voice",
        "a=1",
        public_base="https://agent.example.com/base",
        scheme="http",
        host="10.0.0.5:8080",
        forwarded_proto="http",
        forwarded_host="evil.example",
    )
    assert url == "https://agent.example.com/base/twilio/voice?a=1"


def test_public_url_from_forwarded_headers_behind_tls_proxy() -> None:
    url = public_url(
        "/twilio/voice",
        public_base=None,
        scheme="http",
        host="127.0.0.1:8080",
        forwarded_proto="https, http",
        forwarded_host="agent.example.com",
    )
    assert url == "https://agent.example.com/twilio/voice"


def test_public_url_falls_back_to_request() -> None:
    url = public_url("/twilio/voice", "x=y", public_base=None, scheme="http", host="h:81")
    assert url == "http://h:81/twilio/voice?x=y"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"public_base": "https://a.example", "scheme": "ws", "host": "x"},
            "wss://a.example/twilio/media",
        ),
        (
            {"public_base": None, "scheme": "ws", "host": "x:1", "forwarded_proto": "https"},
            "wss://x:1/twilio/media",
        ),
        (
            {
                "public_base": None,
                "scheme": "ws",
                "host": "x:1",
                "forwarded_proto": "wss",
                "forwarded_host": "y.example",
            },
            "wss://y.example/twilio/media",
        ),
        (
            {"public_base": None, "scheme": "ws", "host": "127.0.0.1:9"},
            "ws://127.0.0.1:9/twilio/media",
        ),
    ],
)
def test_websocket_url_is_the_twiml_url_without_query(kwargs: dict, expected: str) -> None:
    assert public_url("/twilio/media", "ignored=1", websocket=True, **kwargs) == expected


def test_stream_url_follows_webhook_host() -> None:
    assert stream_url("https://a.example:8443/twilio/voice?q=1", "/twilio/media") == (
        "wss://a.example:8443/twilio/media"
    )
    assert stream_url("http://127.0.0.1:5/twilio/voice", "/m") == "ws://127.0.0.1:5/m"


def test_unknown_scheme_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported scheme 'gopher'"):
        public_url("/", public_base=None, scheme="http", host="h", forwarded_proto="gopher")


# --------------------------------------------------------------------------- signatures


def test_webhook_signature_valid_and_forged() -> None:
    url = "https://agent.example.com/twilio/voice"
    checker = SignatureChecker(TOKEN)
    good = sign(url, dict(PARAMS))
    assert checker.webhook(url, PARAMS, good)
    assert not checker.webhook(url, PARAMS, None)
    assert not checker.webhook(url, PARAMS, "")
    assert not checker.webhook(url, PARAMS, sign(url, dict(PARAMS), token="x" * 32))
    tampered = [*PARAMS[:2], ("To", "+14155550000")]
    assert not checker.webhook(url, tampered, good)
    assert not checker.webhook(url + "?x=1", PARAMS, good)


def test_webhook_signature_with_repeated_fields() -> None:
    url = "https://a.example/twilio/voice"
    params = [("A", "2"), ("A", "1"), ("B", "x")]
    expected = RequestValidator(TOKEN).compute_signature(url + "A1A2Bx", {})
    assert SignatureChecker(TOKEN).webhook(url, params, expected)


def test_webhook_signature_tolerates_default_port() -> None:
    checker = SignatureChecker(TOKEN)
    sig = sign("https://a.example:443/twilio/voice", dict(PARAMS))
    assert checker.webhook("https://a.example/twilio/voice", PARAMS, sig)


def test_unsupported_signature_algorithm_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    url = "https://a.example/twilio/voice"
    sig = sign(url, dict(PARAMS))
    assert not SignatureChecker(TOKEN).webhook(url, PARAMS, sig, "key=k,algorithm=ROT13")
    assert "Unsupported webhook signature algorithm" in caplog.text


def test_websocket_signature() -> None:
    url = "wss://agent.example.com/twilio/media"
    checker = SignatureChecker(TOKEN)
    assert checker.websocket(url, sign(url))
    assert not checker.websocket(url, None)
    assert not checker.websocket("wss://other.example/twilio/media", sign(url))


def test_checker_needs_a_token() -> None:
    with pytest.raises(ValueError, match="auth token is required"):
        SignatureChecker("")


# --------------------------------------------------------------------------- tokens


def test_token_round_trip_and_expiry() -> None:
    tokens = StreamTokens.from_auth_token(TOKEN, ttl_s=120)
    tok = tokens.issue(CALL, now=1000.0)
    assert tokens.verify(tok, CALL, now=1000.0) is TokenCheck.OK
    assert tokens.verify(tok, CALL, now=1120.0) is TokenCheck.OK
    assert tokens.verify(tok, CALL, now=1120.5) is TokenCheck.EXPIRED


def test_token_is_bound_to_call_sid_and_expiry() -> None:
    tokens = StreamTokens.from_auth_token(TOKEN, ttl_s=60)
    tok = tokens.issue(CALL, now=0)
    other = "CA" + "cd" * 16
    assert tokens.verify(tok, other, now=1) is TokenCheck.BAD_SIGNATURE
    expiry, mac = tok.split(".")
    extended = f"{int(expiry) + 3600}.{mac}"
    assert tokens.verify(extended, CALL, now=1) is TokenCheck.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("token", "result"),
    [
        (None, TokenCheck.MISSING),
        ("", TokenCheck.MISSING),
        ("nodot", TokenCheck.MALFORMED),
        ("-5.abc", TokenCheck.MALFORMED),
        ("12.abc", TokenCheck.BAD_SIGNATURE),
        ("12." + "é" * 40, TokenCheck.BAD_SIGNATURE),
        ("1" * 200 + ".x", TokenCheck.MALFORMED),
    ],
)
def test_malformed_tokens(token: str | None, result: TokenCheck) -> None:
    tokens = StreamTokens.from_auth_token(TOKEN, ttl_s=60)
    assert tokens.verify(token, CALL, now=0) is result


def test_instances_sharing_auth_token_agree_random_keys_do_not() -> None:
    a = StreamTokens.from_auth_token(TOKEN, ttl_s=60)
    b = StreamTokens.from_auth_token(TOKEN, ttl_s=60)
    assert b.verify(a.issue(CALL, 0), CALL, 0) is TokenCheck.OK
    assert a.key != TOKEN.encode()  # derived, not the auth token itself
    r1 = StreamTokens.from_auth_token(None, ttl_s=60)
    r2 = StreamTokens.from_auth_token(None, ttl_s=60)
    assert r1.verify(r1.issue(CALL, 0), CALL, 0) is TokenCheck.OK
    assert r2.verify(r1.issue(CALL, 0), CALL, 0) is TokenCheck.BAD_SIGNATURE


# --------------------------------------------------------------------------- loopback


@pytest.mark.parametrize(
    ("host", "headers", "expected"),
    [
        ("127.0.0.1", {}, True),
        ("127.3.2.1", {}, True),
        ("::1", {}, True),
        ("10.0.0.1", {}, False),
        (None, {}, False),
        ("not-an-ip", {}, False),
        ("127.0.0.1", {"x-forwarded-for": "203.0.113.9"}, False),
        ("127.0.0.1", {"forwarded": "for=203.0.113.9"}, False),
    ],
)
def test_is_loopback(host: str | None, headers: dict, expected: bool) -> None:
    assert is_loopback(host, headers) is expected


def test_client_ip_believes_only_what_it_should() -> None:
    from telephony.security import client_ip

    forged = {"x-forwarded-for": "203.0.113.9", "fly-client-ip": "203.0.113.10"}
    # an ordinary peer: headers ignored
    assert client_ip("93.184.216.34", forged) == "93.184.216.34"
    assert client_ip("127.0.0.1", forged) == "127.0.0.1"  # a same-host proxy not configured
    # fly: the proxy (a private peer) overwrites Fly-Client-IP; a public peer is not the proxy
    assert client_ip("172.16.3.2", forged, on_fly=True) == "203.0.113.10"
    assert client_ip("fdaa:0:1::3", forged, on_fly=True) == "203.0.113.10"
    assert client_ip("93.184.216.34", forged, on_fly=True) == "93.184.216.34"
    # a configured proxy: the rightmost untrusted hop, whatever the client wrote on the left
    chain = {"x-forwarded-for": "1.2.3.4, 203.0.113.9, 10.0.0.5"}
    assert client_ip("10.0.0.6", chain, ("10.0.0.0/8",)) == "203.0.113.9"
    assert client_ip("10.0.0.6", {"x-forwarded-for": "junk"}, ("10.0.0.0/8",)) == "10.0.0.6"
    assert client_ip("10.0.0.6", {}, ("10.0.0.0/8",)) == "10.0.0.6"
