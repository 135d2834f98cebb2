"""Signalling rules without I/O: tokens, rate limit, TURN credentials, offer checks."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from app.config import ConfigError, Settings, WebRtcSettings
from app.transports.webrtc_signal import (
    RateLimiter,
    SessionTokens,
    SignallingError,
    ice_servers,
    parse_offer,
    turn_rest_credentials,
)

# An offer as Chromium writes it (trimmed to what matters), audio + data channel.
CHROME_OFFER = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "a=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\na=ice-options:trickle\r\n"
    "a=fingerprint:sha-256 "
    "6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08"
    "\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\n"
    "a=fingerprint:sha-256 "
    "6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08"
    "\r\na=setup:actpass\r\na=mid:1\r\na=sctp-port:5000\r\n"
)


def test_tokens_round_trip_once() -> None:
    tokens = SessionTokens(b"k" * 32, ttl_s=60)
    sid, token = tokens.issue(now=1000)
    assert tokens.redeem(token, now=1030) == sid
    with pytest.raises(SignallingError) as err:
        tokens.redeem(token, now=1031)
    assert (err.value.status, err.value.code) == (401, "used_token")


def test_expired_token_is_refused() -> None:
    tokens = SessionTokens(b"k" * 32, ttl_s=60)
    _, token = tokens.issue(now=1000)
    with pytest.raises(SignallingError) as err:
        tokens.redeem(token, now=1061)
    assert (err.value.status, err.value.code) == (401, "expired_token")


@pytest.mark.parametrize("bad", [None, 42, "", "a.b", "x.y.z.w", "a" * 300])
def test_malformed_tokens_are_refused(bad: object) -> None:
    with pytest.raises(SignallingError) as err:
        SessionTokens(b"k" * 32, ttl_s=60).redeem(bad, now=0)
    assert err.value.status == 401


def test_forged_or_extended_token_is_refused() -> None:
    tokens = SessionTokens(b"k" * 32, ttl_s=60)
    sid, token = tokens.issue(now=1000)
    _, exp, sig = token.split(".")
    with pytest.raises(SignallingError, match="signature"):
        tokens.redeem(f"{sid}.{int(exp) + 3600}.{sig}", now=1000)
    other = SessionTokens(b"j" * 32, ttl_s=60)
    with pytest.raises(SignallingError, match="signature"):
        other.redeem(token, now=1000)


def test_used_token_memory_is_bounded_and_forgets_expired() -> None:
    tokens = SessionTokens(b"k" * 32, ttl_s=10, max_remembered=3)
    for i in range(5):
        tokens.redeem(tokens.issue(now=i)[1], now=i)
    assert len(tokens._used) == 3
    tokens.redeem(tokens.issue(now=100)[1], now=100)
    assert len(tokens._used) == 1  # the others had expired


def test_rate_limit_per_key_with_refill() -> None:
    limiter = RateLimiter(per_minute=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0)  # another client is not affected
    assert limiter.retry_after("a") == 20  # one request per 20 s comes back
    assert not limiter.allow("a", 19.0)
    assert limiter.allow("a", 40.0)


def test_rate_limit_forgets_idle_clients_beyond_its_bound() -> None:
    limiter = RateLimiter(per_minute=1, max_keys=2)
    limiter.allow("a", 0)
    limiter.allow("b", 0)
    limiter.allow("c", 0)
    assert list(limiter._buckets) == ["b", "c"]


def test_turn_rest_credentials_follow_the_coturn_scheme() -> None:
    username, credential = turn_rest_credentials("s3cret", "web-1", now=1000, ttl_s=3600)
    assert username == "4600:web-1"
    want = base64.b64encode(hmac.new(b"s3cret", b"4600:web-1", hashlib.sha1).digest()).decode()
    assert credential == want


def test_ice_servers_none_by_default_static_or_rest() -> None:
    assert ice_servers(WebRtcSettings(), "u", 0) == []
    static = WebRtcSettings(
        stun_urls=("stun:stun.example.org:3478",),
        turn_urls=("turn:turn.example.org:3478?transport=udp",),
        turn_username="user",
        turn_credential="pass",
    )
    assert ice_servers(static, "u", 0) == [
        {"urls": ["stun:stun.example.org:3478"]},
        {
            "urls": ["turn:turn.example.org:3478?transport=udp"],
            "username": "user",
            "credential": "pass",
        },
    ]
    rest = WebRtcSettings(turn_urls=("turns:t.example.org:443?transport=tcp",), turn_secret="x")
    (server,) = ice_servers(rest, "u", 100)
    assert server["username"] == "3700:u"


def test_settings_from_env() -> None:
    s = Settings.from_env(
        {
            "WEBRTC_STUN_URLS": "stun:a.example:3478, stun:b.example:3478",
            "WEBRTC_TURN_URLS": "turn:t.example:3478",
            "WEBRTC_TURN_SECRET": "shared",
            "WEBRTC_MAX_CALLS": "3",
        }
    ).webrtc
    assert s.stun_urls == ("stun:a.example:3478", "stun:b.example:3478")
    assert s.turn_secret == "shared" and s.max_calls == 3
    assert Settings.from_env({}).webrtc == WebRtcSettings()


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"WEBRTC_STUN_URLS": "http://x"}, "WEBRTC_STUN_URLS"),
        ({"WEBRTC_TURN_URLS": "turn:t.example:3478"}, "WEBRTC_TURN_SECRET"),
        ({"WEBRTC_MAX_CALLS": "many"}, "WEBRTC_MAX_CALLS"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_env(env)


def test_a_browser_offer_is_accepted() -> None:
    offer = parse_offer({"sdp": CHROME_OFFER, "type": "offer", "token": "t"})
    assert offer.audio_codecs == ("audio/opus", "audio/PCMU")
    assert offer.data_channel


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ([], "bad_request"),
        ({"sdp": CHROME_OFFER, "type": "answer", "token": "t"}, "bad_request"),
        ({"sdp": "", "type": "offer"}, "bad_sdp"),
        ({"sdp": 42, "type": "offer"}, "bad_sdp"),
        ({"sdp": "hello", "type": "offer"}, "bad_sdp"),
        ({"sdp": "v=0\r\nm=audio x", "type": "offer"}, "bad_sdp"),
        ({"sdp": CHROME_OFFER.split("m=audio")[0], "type": "offer"}, "bad_sdp"),
        ({"sdp": CHROME_OFFER.replace("a=ice-pwd", "a=x-pwd"), "type": "offer"}, "bad_sdp"),
        ({"sdp": CHROME_OFFER.replace("a=fingerprint", "a=x-fp"), "type": "offer"}, "bad_sdp"),
        (
            {
                "sdp": CHROME_OFFER.replace("opus/48000/2", "G722/8000").replace("PCMU", "X"),
                "type": "offer",
            },
            "bad_sdp",
        ),
        ({"sdp": "v=0" + "x" * 70_000, "type": "offer"}, "bad_sdp"),
    ],
)
def test_bad_offers_get_a_clear_4xx(body: object, code: str) -> None:
    with pytest.raises(SignallingError) as err:
        parse_offer(body)
    assert 400 <= err.value.status < 500
    assert err.value.code == code
    assert err.value.message
