"""Is this request really from Twilio? One answer for every Twilio-facing route.

With ``TWILIO_AUTH_TOKEN`` set: a valid ``X-Twilio-Signature`` over the public URL (rebuilt from
``PUBLIC_URL``, or the forwarded headers behind a TLS proxy) and the form parameters — or, for
the media WebSocket, over the ``wss://`` URL with no parameters. Without it: only loopback peers
(the local call simulator), which the server says at start-up.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from app.config import Settings
from telephony.security import SignatureChecker, is_loopback, public_url


class TwilioAuth:
    def __init__(self, settings: Settings) -> None:
        self.public_base = settings.server.public_url
        token = settings.twilio.auth_token
        self.checker = SignatureChecker(token) if token else None

    def url(self, conn: HTTPConnection, websocket: bool = False) -> str:
        """The URL Twilio signed for this request."""
        headers = conn.headers
        return public_url(
            conn.url.path,
            conn.url.query,
            public_base=self.public_base,
            scheme=conn.url.scheme,
            host=headers.get("host") or conn.url.netloc,
            forwarded_proto=headers.get("x-forwarded-proto"),
            forwarded_host=headers.get("x-forwarded-host"),
            websocket=websocket,
        )

    def refusal(self, conn: HTTPConnection, url: str, params: list[tuple[str, str]] | None) -> str:
        """Why this request may not proceed, or "" when it may. ``params`` None: a WebSocket
        upgrade (signed with no parameters)."""
        if self.checker is None:
            client = conn.client.host if conn.client else None
            return "" if is_loopback(client, conn.headers) else "no auth token: loopback only"
        signature = conn.headers.get("x-twilio-signature")
        if not signature:
            return "missing signature"
        if params is None:
            ok = self.checker.websocket(url, signature)
        else:
            settings = conn.headers.get("x-twilio-webhooks-signature-settings")
            ok = self.checker.webhook(url, params, signature, settings)
        return "" if ok else "invalid signature"
