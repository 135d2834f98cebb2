"""Serve an ASGI app on 127.0.0.1 inside the running event loop (tests) or as a process."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from app.transports.http_guard import server_options


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # In-process servers leave the test runner's signal handlers alone.
        yield


class LoopbackServer:
    """``async with LoopbackServer(app) as srv: srv.url``. Binds an unused port by default."""

    def __init__(
        self,
        app: Any = None,
        port: int = 0,
        host: str = "127.0.0.1",
        lifespan: str = "off",
        sock: socket.socket | None = None,
    ) -> None:
        self.app = app
        self.lifespan = lifespan
        self.host = host
        self.port = sock.getsockname()[1] if sock is not None else port
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = sock

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def bind(self) -> str:
        """Take the port now (before the app exists, e.g. to put its URL in settings)."""
        if self._sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            self.port = sock.getsockname()[1]
            self._sock = sock
        return self.url

    async def start(self) -> LoopbackServer:
        self.bind()
        assert self._sock is not None and self.app is not None
        sock = self._sock
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan=self.lifespan,
            ws="websockets-sansio",
            timeout_graceful_shutdown=1,
            **server_options(),  # as `voice-agent serve` listens
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.005)
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 15)
        if self._sock is not None:
            self._sock.close()

    async def __aenter__(self) -> LoopbackServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve_forever(app: Any, port: int, name: str) -> None:
    async with LoopbackServer(app, port) as srv:
        print(f"{name} fake on {srv.url}", flush=True)
        await asyncio.Future()
