"""A live outbound stack for tests: the fake Twilio API, our callback routes on a real port, the
real twilio REST client, and a store (SQLite file, or PostgreSQL when given a URL)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from app.campaigns.api import routes as campaign_routes
from app.config import Settings
from app.outbound.clock import Clock
from app.outbound.dialer import TwilioDialer
from app.outbound.routes import routes as outbound_routes
from app.outbound.service import OutboundService
from app.runtime.context import AppContext
from app.store import Store
from tests.fakes.twilio_api import FakeTwilio, bind_local, serve

FROM = "+14155550100"
API_TOKEN = "campaign-api-token-for-tests"


@dataclass
class Stack:
    fake: FakeTwilio
    store: Store
    service: OutboundService
    settings: Settings
    ctx: AppContext
    base_url: str


def stack_env(fake: FakeTwilio, public_url: str, extra: Mapping[str, str] = ()) -> dict[str, str]:
    env = {
        "TWILIO_ACCOUNT_SID": fake.account_sid,
        "TWILIO_AUTH_TOKEN": fake.auth_token,
        "TWILIO_API_BASE_URL": fake.base_url,
        "PUBLIC_URL": public_url,
        "OUTBOUND_FROM_NUMBER": FROM,
        "API_TOKEN": API_TOKEN,
    }
    env.update(dict(extra))
    return env


@contextlib.asynccontextmanager
async def outbound_stack(
    tmp_path: Path,
    *,
    database_url: str | None = None,
    env: Mapping[str, str] = (),
    clock: Clock | None = None,
    fake: FakeTwilio | None = None,
    **fake_kwargs: Any,
) -> AsyncIterator[Stack]:
    async with fake or FakeTwilio(**fake_kwargs) as twilio:
        sock = bind_local()
        public = f"http://127.0.0.1:{sock.getsockname()[1]}"
        settings = Settings.from_env(stack_env(twilio, public, dict(env)))
        store = await Store.open(database_url, sqlite_path=tmp_path / "voice-agent.db")
        try:
            dialer = TwilioDialer(
                twilio.account_sid, twilio.auth_token, api_base_url=twilio.base_url
            )
            service = OutboundService(settings, store, dialer, clock)
            ctx = AppContext(settings, providers=None, phrases=None)  # type: ignore[arg-type]
            ctx.outbound, ctx.store = service, store
            app = Starlette(routes=outbound_routes(ctx) + campaign_routes(ctx))
            async with serve(app, sock=sock) as base_url:
                yield Stack(twilio, store, service, settings, ctx, base_url)
        finally:
            await store.close()
