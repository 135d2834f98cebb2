"""A real server (in-process uvicorn on an unused port) on the embedded local providers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.config import Settings
from app.core.providers import CallInfo
from app.main import build_context
from app.runtime.context import AppContext
from app.server import create_app
from tests.fakes.asgi import LoopbackServer


class Recorder:
    """A call observer that keeps every record, per call (the records the runner emits)."""

    def __init__(self) -> None:
        self.by_call: dict[str, list[Any]] = {}

    def record(self, call: CallInfo, record: Any) -> None:
        self.by_call.setdefault(call.call_id, []).append(record)

    def of(self, call_id: str, kind: type) -> list[Any]:
        return [r for r in self.by_call.get(call_id, []) if isinstance(r, kind)]


class Running:
    def __init__(self, url: str, ctx: AppContext, recorder: Recorder) -> None:
        self.url = url
        self.ctx = ctx
        self.recorder = recorder


@pytest.fixture
def local_server() -> Callable[..., Any]:
    """``async with local_server(IDLE_TIMEOUT_S="5") as srv:`` — env overrides as keywords."""
    import contextlib

    @contextlib.asynccontextmanager
    async def start(**env: str) -> AsyncIterator[Running]:
        settings = Settings.from_env(env)
        ctx = await build_context(settings)
        recorder = Recorder()
        ctx.observers.append(recorder)
        async with LoopbackServer(create_app(ctx), lifespan="on") as srv:
            yield Running(srv.url, ctx, recorder)

    return start
