"""Whole phone calls on the three cloud providers, each a wire-compatible fake on 127.0.0.1.

The server is the real one (settings from an environment, registry, phrase cache, Twilio
transport, runner, session) with keys and base URLs pointing at the fakes; the caller is the
call simulator speaking Twilio's protocol in real time. Caller lines and the agent's voice are
both the fakes' tone code, so the test knows exactly which words crossed each wire: what the
fake Deepgram recognised, what the fake Claude was asked and answered, and what the caller
heard (decoded from the µ-law it received).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator

import pytest

from app.config import AgentSettings, Settings
from app.core.audio import Encoding, pcm16_to_mulaw, to_pcm16
from app.logs import JsonFormatter
from app.main import build_context
from app.server import create_app
from app.simulator import CallerLine, CallOptions, simulate_call
from tests.fakes import tonecode
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.asgi import LoopbackServer
from tests.fakes.deepgram_server import DeepgramFake
from tests.fakes.elevenlabs_server import ElevenLabsFake

DG_KEY, AN_KEY, EL_KEY = "dg-e2e-secret-1111", "sk-ant-e2e-secret-2222", "xi-e2e-secret-3333"
GREETING = "Hi, this is Ava at Sunrise Dental."
FALLBACK = AgentSettings().fallback
FILLER = AgentSettings().filler
OPTIONS = CallOptions(settle_ms=400, reply_timeout=10.0, call_timeout=90.0)


def say(text: str) -> CallerLine:
    return CallerLine(audio=pcm16_to_mulaw(tonecode.encode(text)))


def heard(audio: bytes) -> str:
    return tonecode.decode(to_pcm16(audio, Encoding.MULAW))


def last_user_text(body: dict) -> str:
    return body["messages"][-1]["content"][-1]["text"]


def conversation(cloud: Cloud) -> list[tuple[str, str]]:
    """(question, answer) for each request Claude got during the call, leaving out the
    post-call analysis (the conversation requests are the ones offering ``end_call``)."""
    return [
        (last_user_text(body), reply)
        for body, reply in zip(cloud.anthropic.requests, cloud.anthropic.replies, strict=True)
        if any(t["name"] == "end_call" for t in body.get("tools", []))
    ]


def asked(cloud: Cloud) -> list[str]:
    """The caller turns Claude was asked to answer. The session may ask twice for one turn
    (it takes the turn back when its own VAD still hears the caller after the recogniser's
    endpoint); the repeat is the same question, so it is folded here."""
    out: list[str] = []
    for text, _ in conversation(cloud):
        if not out or out[-1] != text:
            out.append(text)
    return out


def answer(cloud: Cloud, line: str) -> str:
    """The last answer to a question ending with the caller's ``line``: the one heard. (After
    a failed turn the session asks again with the unanswered line in front of the new one.)"""
    return [a for q, a in conversation(cloud) if q.endswith(line)][-1]


class Cloud:
    def __init__(self) -> None:
        self.deepgram = DeepgramFake(api_key=DG_KEY)
        self.anthropic = AnthropicFake(api_key=AN_KEY)
        self.elevenlabs = ElevenLabsFake(api_key=EL_KEY)


@contextlib.asynccontextmanager
async def cloud_call_server(**extra_env: str) -> AsyncIterator[tuple[str, Cloud]]:
    cloud = Cloud()
    async with (
        cloud.deepgram,
        LoopbackServer(cloud.anthropic.app()) as anthropic,
        LoopbackServer(cloud.elevenlabs.app()) as elevenlabs,
    ):
        env = {
            "DEEPGRAM_API_KEY": DG_KEY,
            "DEEPGRAM_URL": cloud.deepgram.ws_url,
            "ANTHROPIC_API_KEY": AN_KEY,
            "ANTHROPIC_BASE_URL": anthropic.url,
            "ELEVENLABS_API_KEY": EL_KEY,
            "ELEVENLABS_BASE_URL": elevenlabs.url,
            "AGENT_GREETING": GREETING,
            **extra_env,
        }
        settings = Settings.from_env(env)
        ctx = await build_context(settings)
        assert (ctx.providers.stt.name, ctx.providers.llm.name, ctx.providers.tts.name) == (
            "deepgram",
            "anthropic",
            "elevenlabs",
        )
        try:
            async with LoopbackServer(create_app(ctx), lifespan="on") as server:
                yield server.url, cloud
        finally:
            for provider in (ctx.providers.stt, ctx.providers.llm, ctx.providers.tts):
                if hasattr(provider, "aclose"):
                    await provider.aclose()  # their HTTP connection pools


async def test_full_phone_call_on_three_cloud_providers(caplog):
    caplog.set_level(logging.INFO)
    lines = [
        "hi i'd like to book a cleaning appointment",
        "tomorrow at ten in the morning please",
        "my name is zebulon morgan",
    ]
    async with cloud_call_server() as (url, cloud):
        result = await simulate_call(url, [say(t) for t in lines], OPTIONS)
    assert result.ok, (result.error, result.violations)
    assert heard(result.turns[0].agent_audio) == tonecode.normalise(GREETING)
    # every caller line was recognised word for word from the µ-law Deepgram received ...
    assert cloud.deepgram.transcripts == lines
    assert cloud.deepgram.queries[0]["encoding"] == ["mulaw"]
    # ... reached Claude as the caller's turn, and the caller heard Claude's answer
    # (the session may fold an earlier caller line into the next question: compare the ends)
    questions = asked(cloud)
    assert len(questions) == len(lines)
    assert all(q.endswith(line) for q, line in zip(questions, lines, strict=True))
    for turn, question in zip(result.turns[1:], questions, strict=True):
        assert heard(turn.agent_audio) == tonecode.normalise(answer(cloud, question))
        assert turn.latency_ms is not None and turn.latency_ms < 2000
    # ElevenLabs was asked for Twilio's format and synthesised only the replies
    assert {r["query"]["output_format"] for r in cloud.elevenlabs.requests} >= {"ulaw_8000"}
    # no key, token or transcript text in any log line
    for record in caplog.records:
        line = JsonFormatter().format(record)
        for secret in (DG_KEY, AN_KEY, EL_KEY, "zebulon", "cleaning"):
            assert secret not in line.lower(), line


async def test_deepgram_drop_mid_utterance_loses_no_words():
    line = "i need to move my appointment to friday"
    async with cloud_call_server() as (url, cloud):
        cloud.deepgram.drop_after_speech_ms = 900  # mid-sentence, on the first socket
        result = await simulate_call(url, [say(line)], OPTIONS)
    assert result.ok, (result.error, result.violations)
    assert cloud.deepgram.connections == 2
    assert cloud.deepgram.transcripts == [line]  # whole, though the socket died mid-word
    assert asked(cloud) == [line]
    assert heard(result.turns[1].agent_audio) == tonecode.normalise(answer(cloud, line))


async def test_claude_529_then_success_is_invisible_to_the_caller():
    async with cloud_call_server() as (url, cloud):
        cloud.anthropic.faults = ["529"]
        result = await simulate_call(url, [say("what are your opening hours")], OPTIONS)
    assert result.ok, (result.error, result.violations)
    assert cloud.anthropic.faults == [] and len(conversation(cloud)) >= 2
    turn = result.turns[1]
    assert heard(turn.agent_audio) == tonecode.normalise(
        answer(cloud, "what are your opening hours")
    )
    assert turn.latency_ms is not None and turn.latency_ms < 2000


async def test_claude_stalled_past_budget_speaks_within_two_seconds_and_carries_on():
    # With the default settings the filler covers a slow model 1 s after the caller stopped
    # speaking (our VAD's end of speech), so the caller's wait stays well under 2 s.
    async with cloud_call_server() as (url, cloud):
        stalled, then = "what are your opening hours", "can i book a cleaning"
        cloud.anthropic.fault_when = lambda body: (
            "stall" if last_user_text(body) == stalled else None
        )
        cloud.anthropic.stall_s = 20
        # the caller waits long enough after the filler to hear what comes next
        patient = dataclasses.replace(OPTIONS, settle_ms=3000)
        result = await simulate_call(url, [say(stalled), say(then)], patient)
    assert result.ok, (result.error, result.violations)
    first, second = result.turns[1], result.turns[2]
    assert first.latency_ms is not None and first.latency_ms < 2000
    assert first.gaps_ms == [] or max(first.gaps_ms) < 2000
    spoken = heard(first.agent_audio)
    assert tonecode.normalise(FILLER) in spoken and tonecode.normalise(FALLBACK) in spoken
    # the call carried on: the next turn got Claude's real answer
    assert heard(second.agent_audio) == tonecode.normalise(answer(cloud, then))


async def test_elevenlabs_500_plays_the_cached_fallback():
    async with cloud_call_server() as (url, cloud):
        cloud.elevenlabs.faults = ["500"] * 100  # after start-up: the phrase cache is warm
        result = await simulate_call(url, [say("what are your opening hours")], OPTIONS)
    assert result.ok, (result.error, result.violations)
    turn = result.turns[1]
    assert turn.latency_ms is not None and turn.latency_ms < 2000
    assert heard(turn.agent_audio) == tonecode.normalise(FALLBACK)


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch):
    for key in ("DEEPGRAM_API_KEY", "ANTHROPIC_API_KEY", "ELEVENLABS_API_KEY"):
        monkeypatch.delenv(key, raising=False)
