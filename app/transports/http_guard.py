"""Bounds on every HTTP request, checked before any route does work for an unknown peer.

- ``RequestGuard`` (ASGI middleware): a body larger than its route allows is refused with 413
  from its ``Content-Length`` alone, or as soon as the streamed bytes pass the limit; a body that
  has not fully arrived within ``body_timeout_s`` is refused with 408 and the connection closed.
  Routes still read the body themselves; they just never see more than the bound.
- ``GuardedH11Protocol`` (uvicorn's HTTP protocol): request headers must be complete within
  ``HEADER_TIMEOUT_S`` of the connection opening (or of the previous response), so a peer that
  sends a header a byte at a time cannot hold a connection open (slow loris).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import h11
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.logs import event, get_logger

log = get_logger(__name__)

DEFAULT_MAX_BODY = 64 * 1024  # Twilio's webhooks are a few hundred bytes; an SDP offer ~5 KB
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 10.0


class RequestGuard:
    """``limits``: (path prefix, max bytes, body timeout) checked in order; the first match wins."""

    def __init__(
        self,
        app: ASGIApp,
        limits: Sequence[tuple[str, int, float]] = (),
        default_max: int = DEFAULT_MAX_BODY,
        body_timeout_s: float = BODY_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.limits = tuple(limits)
        self.default = (default_max, body_timeout_s)

    def _bounds(self, path: str) -> tuple[int, float]:
        for prefix, max_bytes, timeout in self.limits:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return max_bytes, timeout
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, timeout = self._bounds(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            _refused(scope, 413, f"declared {declared} bytes, limit {limit}")
            await _respond(send, 413, b"request body too large\n")
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            remaining = deadline - loop.time()
            try:
                async with asyncio.timeout(max(remaining, 0.0)):
                    message = await receive()
            except TimeoutError:
                _refused(scope, 408, f"body not complete within {timeout:.0f} s")
                raise HTTPException(408, "request body too slow", {"Connection": "close"}) \
                    from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    _refused(scope, 413, f"body passed {limit} bytes")
                    raise HTTPException(413, "request body too large", {"Connection": "close"})
            return message

        await self.app(scope, bounded_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _refused(scope: Scope, status: int, why: str) -> None:
    client = scope.get("client")
    event(log, "http_request_refused", logging.WARNING, status=status, reason=why,
          path=scope.get("path"), client=client[0] if client else None)  # fmt: skip


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"text/plain"), (b"connection", b"close"),
                    (b"content-length", str(len(body)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on the request head: uvicorn's own keep-alive
    timer stops at the first byte of a request, so without this a byte every few seconds keeps
    a connection (and its buffers) forever."""

    header_timeout_s = HEADER_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a whole request head has arrived
            self._disarm()

    def on_response_complete(self) -> None:
        self._arm()  # before: a pipelined request handled inside disarms it again
        super().on_response_complete()
        if self.transport.is_closing():
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            client = self.client[0] if self.client else None
            event(log, "http_head_timeout", logging.WARNING, client=client,
                  timeout_s=self.header_timeout_s)  # fmt: skip
            self.transport.close()


def server_options(header_timeout_s: float = HEADER_TIMEOUT_S) -> dict[str, Any]:
    """uvicorn options every listener of ours uses (the server's and the tests'): the guarded
    protocol, a bound on the request head, and no belief in X-Forwarded-For from loopback peers
    (uvicorn's default) — the client address is worked out by ``app.transports.peers``."""
    protocol = type("GuardedH11", (GuardedH11Protocol,), {"header_timeout_s": header_timeout_s})
    return {"http": protocol, "proxy_headers": False, "h11_max_incomplete_event_size": 16 * 1024}
