"""Pure rules of WebRTC signalling: session tokens, rate limits, ICE servers, offer checks.

No I/O and no clock reads: every function takes ``now`` (seconds since the epoch). The routes
in ``app.transports.webrtc`` supply the time and turn the errors into 4xx answers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aiortc.sdp import SessionDescription

from app.config import WebRtcSettings

MAX_SDP_BYTES = 64 * 1024
# Codecs aiortc can decode; an offer without one of them cannot carry the caller's voice.
AUDIO_CODECS = {"audio/opus", "audio/PCMU", "audio/PCMA"}


class SignallingError(Exception):
    """A request the server refuses. ``status`` is the HTTP status, ``code`` a stable name."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- session tokens


class SessionTokens:
    """Short-lived, single-use tokens: ``<session id>.<expiry>.<HMAC-SHA256>``.

    The page gets one from ``POST /webrtc/session`` and spends it on one offer, so a replayed
    or forged offer cannot open a call. Used ids are remembered until they expire (bounded).
    """

    def __init__(self, secret: bytes, ttl_s: int, max_remembered: int = 100_000) -> None:
        self._secret = secret
        self.ttl_s = ttl_s
        self._used: OrderedDict[str, int] = OrderedDict()
        self._max_remembered = max_remembered

    def _sign(self, body: str) -> str:
        digest = hmac.new(self._secret, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, now: float) -> tuple[str, str]:
        """A new (session id, token)."""
        sid = secrets.token_urlsafe(12)
        body = f"{sid}.{int(now) + self.ttl_s}"
        return sid, f"{body}.{self._sign(body)}"

    def redeem(self, token: Any, now: float) -> str:
        """Check a token and spend it. Returns its session id."""
        if not isinstance(token, str) or token.count(".") != 2 or len(token) > 200:
            raise SignallingError(401, "bad_token", "missing or malformed session token")
        sid, exp, sig = token.split(".")
        if not hmac.compare_digest(sig, self._sign(f"{sid}.{exp}")):
            raise SignallingError(401, "bad_token", "session token signature does not match")
        if not exp.isdigit() or int(exp) < now:
            raise SignallingError(401, "expired_token", "session token expired; start again")
        self._forget_expired(now)
        if sid in self._used:
            raise SignallingError(401, "used_token", "session token already used")
        if len(self._used) >= self._max_remembered:
            self._used.popitem(last=False)
        self._used[sid] = int(exp)
        return sid

    @staticmethod
    def expiry(token: str) -> float:
        """The expiry of a token ``redeem`` accepted."""
        return float(token.split(".")[1])

    def _forget_expired(self, now: float) -> None:
        # Insertion order is expiry order (one ttl for all), so expired ids are at the front.
        while self._used:
            sid, exp = next(iter(self._used.items()))
            if exp >= now:
                break
            del self._used[sid]


# --------------------------------------------------------------------------- rate limit


class RateLimiter:
    """Token bucket per key (client IP): ``per_minute`` requests, refilled continuously."""

    def __init__(self, per_minute: int, max_keys: int = 10_000) -> None:
        self.capacity = float(per_minute)
        self.refill_per_s = per_minute / 60.0
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys

    def allow(self, key: str, now: float) -> bool:
        tokens, last = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.refill_per_s)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)  # most recently seen last
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)  # forget the longest-idle client
        return allowed

    def retry_after(self, key: str) -> int:
        tokens, _ = self._buckets.get(key, (self.capacity, 0.0))
        return max(1, int((1.0 - tokens) / self.refill_per_s + 0.999))


# --------------------------------------------------------------------------- ICE servers


def turn_rest_credentials(secret: str, user: str, now: float, ttl_s: int) -> tuple[str, str]:
    """Time-limited TURN credentials (the "TURN REST API" scheme coturn implements with
    ``use-auth-secret``): username ``<expiry>:<user>``, password base64(HMAC-SHA1(secret,
    username))."""
    username = f"{int(now) + ttl_s}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(settings: WebRtcSettings, user: str, now: float) -> list[dict[str, Any]]:
    """ICE servers in the browser's ``RTCIceServer`` shape; the server uses the same list."""
    servers: list[dict[str, Any]] = []
    if settings.stun_urls:
        servers.append({"urls": list(settings.stun_urls)})
    if settings.turn_urls:
        if settings.turn_secret:
            username, credential = turn_rest_credentials(
                settings.turn_secret, user, now, settings.turn_ttl_s
            )
        else:
            username, credential = settings.turn_username or "", settings.turn_credential or ""
        servers.append(
            {"urls": list(settings.turn_urls), "username": username, "credential": credential}
        )
    return servers


# --------------------------------------------------------------------------- offers


@dataclass(frozen=True, slots=True)
class Offer:
    sdp: str
    token: str
    audio_codecs: tuple[str, ...]
    data_channel: bool


def parse_offer(body: Any) -> Offer:
    """Check an offer request body ``{"sdp", "type": "offer", "token"}`` before any peer
    connection is made for it."""
    if not isinstance(body, dict):
        raise SignallingError(400, "bad_request", "expected a JSON object {sdp, type, token}")
    sdp, kind, token = body.get("sdp"), body.get("type"), body.get("token")
    if kind != "offer":
        raise SignallingError(400, "bad_request", 'field "type" must be "offer"')
    if not isinstance(sdp, str) or not sdp.strip():
        raise SignallingError(400, "bad_sdp", 'field "sdp" must be a non-empty string')
    if len(sdp) > MAX_SDP_BYTES:
        raise SignallingError(413, "bad_sdp", f"SDP larger than {MAX_SDP_BYTES} bytes")
    if not sdp.startswith("v=0"):
        raise SignallingError(400, "bad_sdp", "SDP must start with v=0")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises anything from ValueError to assert
        reason = f"SDP could not be parsed ({type(exc).__name__})"
        raise SignallingError(400, "bad_sdp", reason) from None
    codecs: list[str] = []
    has_audio = data_channel = False
    for media in parsed.media:
        if media.kind == "audio":
            has_audio = True
            codecs += [c.mimeType for c in media.rtp.codecs if c.mimeType in AUDIO_CODECS]
        elif media.kind == "application":
            data_channel = True
        ice = media.ice
        if ice.usernameFragment is None or ice.password is None:
            raise SignallingError(400, "bad_sdp", "SDP lacks ICE credentials (a=ice-ufrag/pwd)")
        if media.dtls is None or not media.dtls.fingerprints:
            raise SignallingError(400, "bad_sdp", "SDP lacks a DTLS fingerprint")
    if not has_audio:
        raise SignallingError(400, "bad_sdp", "the offer has no audio (m=audio) section")
    if not codecs:
        raise SignallingError(400, "bad_sdp", "the offer has no Opus, PCMU or PCMA audio codec")
    return Offer(
        sdp=sdp, token=token, audio_codecs=tuple(dict.fromkeys(codecs)), data_channel=data_channel
    )
