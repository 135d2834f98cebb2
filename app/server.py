"""The ASGI application: routes from each feature, one ``AppContext`` per process.

Feature modules expose ``routes(ctx) -> list[BaseRoute]``; this module only assembles them and
owns start-up (providers warm before the first call) and shutdown.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import callcentre, store
from app.campaigns import api as campaigns_api
from app.campaigns import lifecycle as outbound
from app.campaigns.api import CAMPAIGNS_PATH
from app.campaigns.api import MAX_BODY as CAMPAIGNS_MAX_BODY
from app.logs import event, get_logger
from app.ops import calls_api, metrics, zombies
from app.outbound import routes as outbound_routes
from app.runtime import workers
from app.runtime.context import AppContext
from app.transports import twilio, webrtc
from app.transports.http_guard import RequestGuard

log = get_logger(__name__)


async def close_providers(ctx: AppContext) -> None:
    p = ctx.providers
    if p is None:  # a test context without providers
        return
    for provider in dict.fromkeys((p.stt, p.llm, p.tts)):
        aclose = getattr(provider, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception as exc:  # shutting down: note it and go on
                event(
                    log, "provider_close_failed", provider=provider.name, error=type(exc).__name__
                )


class WorkerHeader:
    """Adds ``X-Worker: <index>`` to every HTTP response of a worker under ``--workers N``."""

    def __init__(self, app: ASGIApp, index: int) -> None:
        self.app = app
        self.header = (b"x-worker", str(index).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, tagged)


def create_app(ctx: AppContext) -> Starlette:
    worker = workers.current()

    async def health(request: Request) -> JSONResponse:
        body: dict[str, object] = {"calls": len(ctx.calls)}
        if worker.count > 1:  # this worker's own calls; /api/live has the machine's
            body["worker"] = worker.index
        if ctx.calls.draining:
            return JSONResponse({"status": "draining", **body}, status_code=503)
        return JSONResponse({"status": "ok", **body})

    routes: list[BaseRoute] = [Route("/health", health, methods=["GET"])]
    # Feature routes are appended here, one line per feature module.
    routes += webrtc.routes(ctx)
    routes += twilio.routes(ctx)
    routes += metrics.routes(ctx)
    routes += calls_api.routes(ctx)
    routes += callcentre.routes(ctx)
    routes += outbound_routes.routes(ctx)  # Twilio status and AMD callbacks
    routes += campaigns_api.routes(ctx)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.start(ctx)  # call records (SQLite, or PostgreSQL by DATABASE_URL)
        await callcentre.start(ctx)
        await zombies.start(ctx)  # close records of calls a dead process left open
        await outbound.start(ctx)  # outbound calls; dials running campaigns (CAMPAIGN_DIALER)
        yield
        await outbound.stop(ctx)  # first: place no new calls
        await webrtc.aclose(ctx)  # after any drain: hang up web calls still open
        await zombies.stop(ctx)
        await callcentre.stop(ctx)  # then finish the post-call jobs of every call
        await store.stop(ctx)  # flushes the records of every call
        await close_providers(ctx)  # last: their sockets and HTTP pools

    # Every body bounded before any route reads it; campaign CSVs are the one big upload.
    guard = Middleware(
        RequestGuard,
        limits=[(CAMPAIGNS_PATH, CAMPAIGNS_MAX_BODY, 60.0)],
        body_timeout_s=ctx.settings.server.http_body_timeout_s,
    )
    middleware = [guard]
    if worker.count > 1:  # which worker answered: for operators reading a trace, and tests
        middleware.append(Middleware(WorkerHeader, index=worker.index))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.ctx = ctx
    return app
