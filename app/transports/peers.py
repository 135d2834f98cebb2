"""Who is on the other end of a request: the client address behind fly's proxy or a configured
one (``TRUSTED_PROXIES``), never what an arbitrary peer writes in a header."""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection

from app.config import ServerSettings
from telephony.security import client_ip


def client_address(conn: HTTPConnection, server: ServerSettings) -> str | None:
    peer = conn.client.host if conn.client else None
    return client_ip(peer, conn.headers, server.trusted_proxies, server.on_fly)


def bearer_ok(request: HTTPConnection, token: str | None) -> bool:
    if not token:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    # bytes: compare_digest refuses non-ASCII str, which a hostile header may carry
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode()
    )
