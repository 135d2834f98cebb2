"""A real server on an unused loopback port, and aiortc peers that can reach it.

aioice leaves 127.0.0.1 out of its host candidates. So that two aiortc peers in this process
(test client and server) connect over loopback on any machine, the fixture makes aioice offer
loopback only — the one piece of configuration these tests change. The browser test cannot
do that for Chromium and uses the machine's own interface address instead (see there).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aioice.ice
import pytest

from app.config import Settings, WebRtcSettings
from app.runtime.context import AppContext
from app.server import create_app
from tests.fakes.asgi import LoopbackServer


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@dataclasses.dataclass
class RunningServer:
    url: str
    ctx: AppContext


@contextlib.asynccontextmanager
async def serve(ctx: AppContext) -> AsyncIterator[RunningServer]:
    async with LoopbackServer(create_app(ctx), lifespan="on") as srv:
        yield RunningServer(srv.url, ctx)


def make_settings(**webrtc: Any) -> Settings:
    return dataclasses.replace(Settings(), webrtc=WebRtcSettings(**webrtc))


@pytest.fixture
def server_factory() -> Callable[..., Any]:
    """``async with server_factory(providers=..., **webrtc_settings) as srv``."""

    def factory(
        providers: Any = None, phrases: Any = None, settings: Settings | None = None, **webrtc: Any
    ) -> Any:
        ctx = AppContext(settings or make_settings(**webrtc), providers, phrases)
        return serve(ctx)

    return factory


async def local_context(settings: Settings | None = None) -> AppContext:
    """The embedded local providers (Whisper tiny.en, the scripted receptionist, eSpeak NG) and
    warm fixed phrases: what ``voice-agent serve`` runs without API keys."""
    from app.core.audio import CANONICAL
    from app.providers.local_stt import WhisperStt
    from app.providers.local_tts import EspeakTts
    from app.providers.scripted import ScriptedAgent
    from app.runtime.context import Providers
    from app.runtime.phrases import PhraseCache

    settings = settings or make_settings()
    stt = WhisperStt()
    await asyncio.to_thread(stt.warm)
    providers = Providers(stt=stt, llm=ScriptedAgent(), tts=EspeakTts())
    phrases = PhraseCache()
    script = settings.agent.script()
    await phrases.warm(providers.tts, script.cached_phrases(), formats=(CANONICAL,))
    return AppContext(settings, providers, phrases)


@pytest.fixture(autouse=True)
def own_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's server opens its own default SQLite file (``data/`` under the working
    directory): admission slots and spent tokens of one test must not fill another's."""
    monkeypatch.chdir(tmp_path)
