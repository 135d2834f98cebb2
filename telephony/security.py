"""Who may talk to us: Twilio request signatures, the signed URL, and per-call stream tokens.

Signatures are checked with ``twilio.request_validator.RequestValidator``; we only rebuild the
exact URL Twilio signed. Pure functions and small objects: no I/O, no clock reads (``now`` is
passed in).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from twilio.request_validator import RequestValidator, get_signature_algorithm

# --------------------------------------------------------------------------- the signed URL

_WS_SCHEME = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}
_HTTP_SCHEME = {"wss": "https", "ws": "http", "https": "https", "http": "http"}


def _first(value: str | None) -> str | None:
    """First hop of a comma-separated forwarding header (``https, http`` -> ``https``)."""
    if not value:
        return None
    head = value.split(",", 1)[0].strip()
    return head or None


def public_url(
    path: str,
    query: str = "",
    *,
    public_base: str | None,
    scheme: str,
    host: str,
    forwarded_proto: str | None = None,
    forwarded_host: str | None = None,
    websocket: bool = False,
) -> str:
    """The URL Twilio used (and signed) for this request.

    Precedence: the configured ``PUBLIC_URL`` base; else ``X-Forwarded-Proto``/``-Host`` from a
    TLS-terminating proxy (which makes the app see ``http``/``ws``); else the request's own
    scheme and Host. For a WebSocket upgrade the scheme becomes ``wss``/``ws`` and the query is
    dropped: Twilio signs the ``<Stream url>`` exactly as written in the TwiML, which carries no
    query string.
    """
    if public_base:
        parts = urlsplit(public_base)
        base_scheme, netloc, prefix = parts.scheme, parts.netloc, parts.path.rstrip("/")
    else:
        base_scheme = (_first(forwarded_proto) or scheme).lower()
        netloc, prefix = _first(forwarded_host) or host, ""
    if base_scheme not in _WS_SCHEME:
        raise ValueError(f"unsupported scheme {base_scheme!r}")
    if websocket:
        return f"{_WS_SCHEME[base_scheme]}://{netloc}{prefix}{path}"
    url = f"{_HTTP_SCHEME[base_scheme]}://{netloc}{prefix}{path}"
    return f"{url}?{query}" if query else url


def stream_url(webhook_url: str, path: str) -> str:
    """The ``wss://`` URL of ``path`` on the host Twilio reached for ``webhook_url``."""
    parts = urlsplit(webhook_url)
    return f"{_WS_SCHEME[parts.scheme]}://{parts.netloc}{path}"


# --------------------------------------------------------------------------- signatures


class _Params(dict[str, list[str]]):
    """Repeated form fields in the shape RequestValidator reads (``getlist``)."""

    def getlist(self, key: str) -> list[str]:
        return self[key]


class SignatureChecker:
    """Validates ``X-Twilio-Signature`` for webhooks and the Media Streams upgrade."""

    def __init__(self, auth_token: str) -> None:
        if not auth_token:
            raise ValueError("a Twilio auth token is required to check signatures")
        self._validator = RequestValidator(auth_token)

    def webhook(
        self,
        url: str,
        params: Iterable[tuple[str, str]],
        signature: str | None,
        signature_settings: str | None = None,
    ) -> bool:
        """A form-encoded webhook: ``url`` as Twilio requested it, every POST field."""
        if not signature:
            return False
        grouped = _Params()
        for key, value in params:
            grouped.setdefault(key, []).append(value)
        algorithm = get_signature_algorithm(signature_settings)
        return bool(self._validator.validate(url, grouped, signature, algorithm))

    def websocket(self, url: str, signature: str | None) -> bool:
        """The Media Streams upgrade: signed over the ``wss://`` URL with no parameters."""
        if not signature:
            return False
        return bool(self._validator.validate(url, {}, signature))


# --------------------------------------------------------------------------- stream tokens


class TokenCheck(enum.Enum):
    OK = "ok"
    MISSING = "missing"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad signature"
    EXPIRED = "expired"


def _derived_key(auth_token: str | None, purpose: bytes) -> bytes:
    """A key for ``purpose`` from the auth token, so every instance behind a load balancer
    agrees; without one, a random per-process key (then it verifies on this process only)."""
    if auth_token:
        return hmac.new(auth_token.encode("utf-8"), purpose, hashlib.sha256).digest()
    return secrets.token_bytes(32)


@dataclass(frozen=True, slots=True)
class StreamTokens:
    """Short-lived tokens binding a Media Stream to the CallSid our webhook answered.

    The upgrade signature covers only the fixed ``wss://`` URL, so a captured signature could
    open streams for any call; the token, passed as a ``<Parameter>`` and returned in
    ``start.customParameters``, proves the stream belongs to a call we admitted, recently.
    Token: ``<expiry>.<base64url HMAC-SHA256(key, "<CallSid>.<expiry>")>``.
    """

    key: bytes
    ttl_s: int

    @classmethod
    def from_auth_token(cls, auth_token: str | None, ttl_s: int) -> StreamTokens:
        """Key derived from the auth token, so every instance behind a load balancer agrees;
        without one, a random per-process key (then the stream must reach this process)."""
        return cls(key=_derived_key(auth_token, b"voice-agent/stream-token/v1"), ttl_s=ttl_s)

    def issue(self, call_sid: str, now: float) -> str:
        expiry = int(now) + self.ttl_s
        return f"{expiry}.{self._mac(call_sid, expiry)}"

    def verify(self, token: str | None, call_sid: str, now: float) -> TokenCheck:
        if not token:
            return TokenCheck.MISSING
        expiry_text, dot, mac = token.partition(".")
        if not dot or not expiry_text.isascii() or not expiry_text.isdigit() or len(token) > 128:
            return TokenCheck.MALFORMED
        expiry = int(expiry_text)
        expected = self._mac(call_sid, expiry).encode("ascii")
        if not hmac.compare_digest(mac.encode("ascii", "replace"), expected):
            return TokenCheck.BAD_SIGNATURE
        if now > expiry:
            return TokenCheck.EXPIRED
        return TokenCheck.OK

    def _mac(self, call_sid: str, expiry: int) -> str:
        digest = hmac.new(self.key, f"{call_sid}.{expiry}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def is_loopback(client_host: str | None, headers: Mapping[str, str]) -> bool:
    """A direct loopback peer. A request relayed by a local proxy (it carries forwarding
    headers) is not: the real caller is elsewhere."""
    try:
        if not client_host or not ipaddress.ip_address(client_host).is_loopback:
            return False
    except ValueError:
        return False
    return not any(h in headers for h in ("x-forwarded-for", "forwarded", "x-real-ip"))


def client_ip(
    peer: str | None,
    headers: Mapping[str, str],
    trusted_proxies: Sequence[str] = (),
    on_fly: bool = False,
) -> str | None:
    """The caller's address as far as it can be believed.

    - On fly.io the proxy (a private-range peer) sets ``Fly-Client-IP`` to the address it saw;
      a value sent by the client itself is overwritten by the proxy, so it is taken from there.
    - From a peer in ``trusted_proxies``, ``X-Forwarded-For`` is walked from the right past the
      trusted hops: the first untrusted one is the client (the left end is the client's say).
    - Otherwise the peer itself: forwarding headers from anyone else are ignored, so a caller
      cannot pick a fresh rate-limit bucket by writing a header.
    """
    try:
        peer_ip = ipaddress.ip_address(peer or "")
    except ValueError:
        return peer
    if on_fly and (peer_ip.is_private or peer_ip.is_loopback):
        claimed = headers.get("fly-client-ip", "").strip()
        if _valid_ip(claimed):
            return claimed
    nets = [ipaddress.ip_network(n, strict=False) for n in trusted_proxies]
    if not any(peer_ip in n for n in nets):
        return peer
    hops = [h.strip() for h in headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _valid_ip(hop):
            break
        if not any(ipaddress.ip_address(hop) in n for n in nets):
            return hop
    return peer


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def stream_parameters(
    tokens: StreamTokens,
    call_sid: str,
    now: float,
    *,
    direction: str,
    from_number: str | None,
    to_number: str | None,
    agent: str | None = None,
) -> dict[str, str]:
    """The ``<Parameter>``s of a stream we open: the token that binds it to its CallSid, and
    what the call is, echoed back in ``start.customParameters`` so any instance can rebuild it."""
    parameters = {
        "token": tokens.issue(call_sid, now),
        "direction": direction,
        "from": from_number or "",
        "to": to_number or "",
    }
    if agent:
        parameters["agent"] = agent
    return parameters


@dataclass(frozen=True, slots=True)
class ResumeTokens:
    """Tokens that let a new stream continue a call whose stream dropped.

    Bound to the CallSid, short-lived, and carrying a nonce that the store marks used on the
    first stream that presents it, so a captured token cannot be replayed. Token:
    ``<nonce>.<expiry>.<base64url HMAC-SHA256(key, "<CallSid>.<nonce>.<expiry>")>``.
    """

    key: bytes
    ttl_s: int

    @classmethod
    def from_auth_token(cls, auth_token: str | None, ttl_s: int) -> ResumeTokens:
        return cls(key=_derived_key(auth_token, b"voice-agent/resume-token/v1"), ttl_s=ttl_s)

    def issue(self, call_sid: str, now: float) -> tuple[str, str]:
        """(nonce, token)."""
        nonce = secrets.token_hex(12)
        expiry = int(now) + self.ttl_s
        return nonce, f"{nonce}.{expiry}.{self._mac(call_sid, nonce, expiry)}"

    def verify(self, token: str | None, call_sid: str, now: float) -> tuple[TokenCheck, str]:
        """(check, nonce): the nonce is what the store redeems once."""
        if not token:
            return TokenCheck.MISSING, ""
        if len(token) > 160 or token.count(".") != 2:
            return TokenCheck.MALFORMED, ""
        nonce, expiry_text, mac = token.split(".")
        if not (nonce.isascii() and nonce.isalnum() and expiry_text.isascii()
                and expiry_text.isdigit()):
            return TokenCheck.MALFORMED, ""
        expected = self._mac(call_sid, nonce, int(expiry_text)).encode("ascii")
        if not hmac.compare_digest(mac.encode("ascii", "replace"), expected):
            return TokenCheck.BAD_SIGNATURE, ""
        if now > int(expiry_text):
            return TokenCheck.EXPIRED, ""
        return TokenCheck.OK, nonce

    def _mac(self, call_sid: str, nonce: str, expiry: int) -> str:
        msg = f"{call_sid}.{nonce}.{expiry}".encode()
        digest = hmac.new(self.key, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
