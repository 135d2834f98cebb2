"""Fakes at the provider and transport boundaries for call-centre tests.

The call itself runs on the real ``CallRunner`` and ``Session``; only the recogniser (silent),
the model (a scripted list of replies), the voice (100 ms of µ-law silence per sentence) and the
transport (echoes every mark at once, as Twilio does for an empty buffer) are stand-ins.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.agents import load_settings
from app.config import Settings
from app.core.audio import MULAW_8K, AudioChunk, AudioFormat
from app.core.providers import CallInfo, LlmEvent, LlmRequest, TextDelta, ToolCall
from app.runtime.context import AppContext, Providers
from app.runtime.phrases import PhraseCache

ACCOUNT = "AC" + "0" * 32
TOKEN = "fake-auth-token-0123456789"
OUR_NUMBER = "+15550100001"
CALLER = "+15550123456"
COLLEAGUE = "+15550100999"
CALL_SID = "CA" + "ab" * 16


class SilentStt:
    name = "silent"
    input_format: AudioFormat = MULAW_8K

    async def open(self, call: CallInfo) -> Any:
        return _SilentStream()


class _SilentStream:
    def __init__(self) -> None:
        self._closed = asyncio.Event()

    async def send(self, chunk: AudioChunk) -> None:
        return None

    async def events(self) -> AsyncIterator[Any]:
        await self._closed.wait()
        return
        yield  # an async generator that yields nothing

    async def aclose(self) -> None:
        self._closed.set()


class ReplyLlm:
    """Answers turn n with ``replies[n]``: text, then tool calls."""

    name = "fake-llm"

    def __init__(self, replies: list[tuple[str, list[ToolCall]]]) -> None:
        self.replies = list(replies)
        self.requests: list[LlmRequest] = []

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmEvent]:
        self.requests.append(request)
        text, tools = self.replies.pop(0) if self.replies else ("Okay.", [])
        if text:
            yield TextDelta(text)
        for tool in tools:
            yield tool


class SilenceTts:
    name = "silence"
    formats: tuple[AudioFormat, ...] = (MULAW_8K,)

    def __init__(self) -> None:
        self.spoken: list[str] = []

    async def synthesize(self, text: str, fmt: AudioFormat) -> AsyncIterator[AudioChunk]:
        self.spoken.append(text)
        if text.strip():
            yield AudioChunk(b"\xff" * 800, fmt)


@dataclass
class EchoSink:
    format: AudioFormat = MULAW_8K
    runner: Any = None
    audio_bytes: int = 0
    marks: list[str] = field(default_factory=list)
    hangups: list[str] = field(default_factory=list)

    async def send_audio(self, chunk: AudioChunk) -> None:
        self.audio_bytes += len(chunk.data)

    async def send_mark(self, name: str) -> None:
        self.marks.append(name)
        asyncio.get_running_loop().call_soon(self.runner.mark_reached, name)

    async def clear(self) -> None:
        return None

    async def hangup(self, reason: str) -> None:
        self.hangups.append(reason)


def settings(tmp: Path, agents_toml: str, **env: str) -> Settings:
    path = tmp / "agents.toml"
    path.write_text(agents_toml)
    base = {
        "AGENTS_FILE": str(path),
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": TOKEN,
    }
    base.update(env)
    return load_settings(base)


def context(s: Settings, llm: Any) -> AppContext:
    return AppContext(s, Providers(stt=SilentStt(), llm=llm, tts=SilenceTts()), PhraseCache())


def inbound(sid: str = CALL_SID) -> CallInfo:
    return CallInfo(sid, "twilio", "inbound", from_number=CALLER, to_number=OUR_NUMBER)


def tool(name: str, **arguments: Any) -> ToolCall:
    return ToolCall(id=f"{name}_1", name=name, arguments=arguments)


async def wait_for(predicate: Any, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not predicate():
        if loop.time() > end:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)
