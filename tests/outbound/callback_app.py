"""An instance that only takes Twilio's callbacks (and the campaign API), configured from the
environment like the server: ``uvicorn --factory tests.outbound.callback_app:create``.
Used where the callback side must run in its own process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette

from app import store as store_feature
from app.campaigns import lifecycle
from app.campaigns.api import routes as campaign_routes
from app.config import Settings
from app.outbound.routes import routes as outbound_routes
from app.runtime.context import AppContext


def create() -> Starlette:
    settings = Settings.from_env()
    ctx = AppContext(settings, providers=None, phrases=None)  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store_feature.start(ctx)
        await lifecycle.start(ctx)
        try:
            yield
        finally:
            await lifecycle.stop(ctx)
            await store_feature.stop(ctx)

    return Starlette(routes=outbound_routes(ctx) + campaign_routes(ctx), lifespan=lifespan)
