"""Whole phone calls with Deepgram Flux as the recogniser (STT_PROVIDER=flux), on the fakes.

Same server and caller as ``test_cloud_call``; the Deepgram fake also answers ``/v2/listen``.
What this adds: the runner hands Flux's end-of-turn to the session as a model's decision
(no adaptive wait on top), and a socket dropped mid-turn still gives Claude the whole line.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from app.config import Settings
from app.main import build_context
from app.server import create_app
from app.simulator import simulate_call
from tests.e2e.test_cloud_call import (
    AN_KEY,
    DG_KEY,
    EL_KEY,
    GREETING,
    OPTIONS,
    Cloud,
    answer,
    asked,
    heard,
    say,
)
from tests.fakes import tonecode
from tests.fakes.asgi import LoopbackServer
from tests.fakes.flux_server import FluxFake


@contextlib.asynccontextmanager
async def flux_call_server(**extra_env: str) -> AsyncIterator[tuple[str, Cloud]]:
    cloud = Cloud()
    cloud.deepgram = FluxFake(api_key=DG_KEY)
    async with (
        cloud.deepgram,
        LoopbackServer(cloud.anthropic.app()) as anthropic,
        LoopbackServer(cloud.elevenlabs.app()) as elevenlabs,
    ):
        env = {
            "STT_PROVIDER": "flux",
            "DEEPGRAM_API_KEY": DG_KEY,
            "DEEPGRAM_URL": cloud.deepgram.ws_url,
            "ANTHROPIC_API_KEY": AN_KEY,
            "ANTHROPIC_BASE_URL": anthropic.url,
            "ELEVENLABS_API_KEY": EL_KEY,
            "ELEVENLABS_BASE_URL": elevenlabs.url,
            "AGENT_GREETING": GREETING,
            **extra_env,
        }
        ctx = await build_context(Settings.from_env(env))
        assert ctx.providers.stt.name == "flux"
        try:
            async with LoopbackServer(create_app(ctx), lifespan="on") as server:
                yield server.url, cloud
        finally:
            for provider in (ctx.providers.stt, ctx.providers.llm, ctx.providers.tts):
                if hasattr(provider, "aclose"):
                    await provider.aclose()


async def test_phone_call_on_flux_answers_each_turn_when_the_model_ends_it():
    lines = ["hi i'd like to book a cleaning", "tomorrow at ten please"]
    # A long adaptive wait would show in the latency if the session still added it.
    async with flux_call_server(ENDPOINTING_MS="1500") as (url, cloud):
        result = await simulate_call(url, [say(t) for t in lines], OPTIONS)
    assert result.ok, (result.error, result.violations)
    assert cloud.deepgram.queries[0]["model"] == ["flux-general-en"]
    assert cloud.deepgram.transcripts == lines  # the EndOfTurn transcripts
    questions = asked(cloud)
    assert len(questions) == len(lines)
    assert all(q.endswith(line) for q, line in zip(questions, lines, strict=True))
    for turn, question in zip(result.turns[1:], questions, strict=True):
        assert heard(turn.agent_audio) == tonecode.normalise(answer(cloud, question))
        # speech end -> Flux's end of turn (~0.42 s of silence) -> reply, with no 1.5 s wait
        assert turn.latency_ms is not None and turn.latency_ms < 1400


async def test_flux_socket_dropped_mid_turn_loses_no_words():
    line = "i need to move my appointment to friday"
    async with flux_call_server() as (url, cloud):
        cloud.deepgram.drop_after_speech_ms = 900
        result = await simulate_call(url, [say(line)], OPTIONS)
    assert result.ok, (result.error, result.violations)
    assert cloud.deepgram.connections == 2
    assert cloud.deepgram.transcripts == [line]
    assert asked(cloud) == [line]
    assert heard(result.turns[1].agent_audio) == tonecode.normalise(answer(cloud, line))
