"""``voice-agent serve``: build the process context (warm providers, cached phrases), then serve.

Everything slow happens here, before the port opens: models load and the fixed phrases are
synthesised, so the first call answers as fast as the hundredth.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import socket
import sys
import time
from collections.abc import Iterator

import uvicorn

from app.agents import load_settings
from app.config import ConfigError, Settings
from app.core.audio import CANONICAL, MULAW_8K
from app.logs import configure, event, get_logger, register_secret
from app.ops import sentry as ops_sentry
from app.runtime import event_loop, workers
from app.runtime.context import AppContext
from app.runtime.drain import DrainingServer
from app.runtime.phrases import PhraseCache
from app.transports.http_guard import server_options

log = get_logger(__name__)


def register_secrets(settings: Settings) -> None:
    """Every secret setting is masked in logs should it ever appear in a message."""
    from urllib.parse import urlsplit

    cloud = settings.providers.cloud
    db_url = settings.store.database_url
    for secret in (
        settings.twilio.auth_token,
        cloud.deepgram_api_key,
        cloud.anthropic_api_key,
        cloud.elevenlabs_api_key,
        settings.webrtc.turn_credential,
        settings.webrtc.turn_secret,
        settings.webrtc.token_secret,
        settings.ops.metrics_token,
        settings.ops.api_token,
        settings.ops.sentry_dsn,
        settings.callcentre.post_call_webhook_secret,
        urlsplit(db_url).password if db_url else None,
        workers.current().secret,
    ):
        register_secret(secret)


async def build_context(settings: Settings) -> AppContext:
    from app.providers.registry import build_providers, warm

    started = time.perf_counter()
    providers = build_providers(settings)
    await warm(providers)
    phrases = PhraseCache()
    script = settings.agent.script()
    fallback = None
    if providers.tts.name != "espeak":  # fixed phrases must exist even if cloud TTS is down
        from app.providers.local_tts import EspeakTts

        fallback = EspeakTts(settings.providers.local)
    await phrases.warm(
        providers.tts, script.cached_phrases(), formats=(MULAW_8K, CANONICAL), fallback=fallback
    )
    if providers.tts.name == "espeak":
        await _check_agent_voices(settings)
    ctx = AppContext(settings, providers, phrases)
    event(
        log,
        "ready",
        stt=providers.stt.name,
        llm=providers.llm.name,
        tts=providers.tts.name,
        warm_ms=round((time.perf_counter() - started) * 1000),
    )
    return ctx


async def _check_agent_voices(settings: Settings) -> None:
    """Every agent profile's eSpeak voice exists: an unknown one is a start-up error naming the
    agent, not a failure on its first call."""
    from app.providers.local_tts import TtsError, render

    book = settings.callcentre.agents
    for name, agent in (book.agents.items() if book is not None else ()):
        if agent.voice:
            try:
                await asyncio.to_thread(render, "Hello.", CANONICAL, agent.voice)
            except TtsError as exc:
                where = settings.callcentre.agents_file
                raise TtsError(f"agent {name!r} in {where}: {exc}") from None


async def check_store(settings: Settings) -> None:
    """Open the database once before anything else, so a wrong DATABASE_URL is one clear line
    at start-up rather than a traceback from the server's lifespan."""
    from app.store import Store

    store = await Store.open(settings.store.database_url)
    await store.close()


async def serve(settings: Settings) -> None:
    from app.server import create_app

    await check_store(settings)
    ctx = await build_context(settings)
    ops_sentry.install(ctx)
    app = create_app(ctx)
    # Start-up leaves ~300k long-lived objects (SDK types, models, phrases). A full collection
    # walks them all, stalling every live call at once (measured: 80-140 ms with 30 calls);
    # frozen, they are never walked again and a full collection takes ~15 ms.
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,  # after the drain, connections left get this long
        # deadlines on request heads; no X-Forwarded-For from loopback peers
        **server_options(settings.server.http_header_timeout_s),
    )
    # SIGTERM/SIGINT drain the calls first (app.runtime.drain), then uvicorn stops.
    server = DrainingServer(
        config, ctx.calls, settings.server.drain_timeout_s, settings.ops.drain_grace_s,
        handover=settings.server.drain_handover,
    )
    worker = workers.current()
    event(log, "listening", host=settings.server.host, port=settings.server.port,
          worker=worker.index, workers=worker.count,
          loop=type(asyncio.get_running_loop()).__module__.split(".")[0])
    internal = _metrics_server(ctx)
    internal_task = None
    if internal is not None:
        internal_task = asyncio.create_task(internal.serve(sockets=_shared(internal.config)))
    try:
        await server.serve(sockets=_shared(config))
    finally:
        if internal is not None and internal_task is not None:
            internal.should_exit = True
            await asyncio.gather(internal_task, return_exceptions=True)
        ops_sentry.shutdown()


def _shared(config: uvicorn.Config) -> list[socket.socket] | None:
    """Under ``--workers N``, the port bound with SO_REUSEPORT (uvicorn binds it otherwise)."""
    if workers.current().count == 1:
        return None
    return [workers.listen_socket(config.host, config.port)]


class _SideServer(uvicorn.Server):
    """A second listener in the same loop; the main server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _metrics_server(ctx: AppContext) -> uvicorn.Server | None:
    from app.ops.metrics import internal_app

    port = ctx.settings.server.metrics_port
    if not port:
        return None
    host = ctx.settings.server.metrics_host
    config = uvicorn.Config(
        internal_app(ctx), host=host, port=port, log_config=None, access_log=False,
        lifespan="off", **server_options(ctx.settings.server.http_header_timeout_s),
    )
    event(log, "metrics_listening", host=host, port=port)
    return _SideServer(config)


def run_serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        configure()
        event(log, "config_error", error=str(exc))
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.port:
        settings = _with_port(settings, args.port)
    configure(settings.server.log_level)
    register_secrets(settings)
    count = args.workers if args.workers is not None else settings.server.workers
    count = count or workers.default_count()
    if workers.INDEX_ENV not in os.environ and count > 1:
        from app.runtime.supervisor import Supervisor

        return Supervisor(count, ["--port", str(settings.server.port)]).run()
    from app.providers.local_tts import TtsError
    from app.store import StoreError

    try:
        event_loop.run(serve(settings), settings.server.event_loop)
    except (ConfigError, StoreError, TtsError) as exc:
        # What a new user mistyped, said once, without a traceback.
        event(log, "startup_failed", error=str(exc))
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


def _with_port(settings: Settings, port: int) -> Settings:
    from dataclasses import replace

    return replace(settings, server=replace(settings.server, port=port))


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the server (embedded local providers without keys)")
    p.add_argument("--port", type=int, default=0, help="override PORT")
    p.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="server processes sharing the port (default: WORKERS, else one per usable core)",
    )
    p.set_defaults(func=run_serve)
