"""The benchmark's conversation and its providers: the test suite's wire-compatible fakes of
Deepgram, Claude and ElevenLabs, each with a fixed latency, and the time each one injects.

Caller lines are real speech (eSpeak NG). The fake Deepgram recognises them by their energy
envelope against the known clips (the audio arrives byte for byte as sent, so the right clip
matches exactly and a mangled stream matches nothing); the fake Claude answers each line with a
fixed reply, so the tokens it must write before the first sentence can be spoken are known.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.config import AgentSettings
from app.core.audio import MULAW_8K, AudioFormat, Encoding, to_pcm16
from app.core.text import SentenceSplitter
from app.core.vad import SpeechEnd, VoiceActivity
from app.providers.local_tts import render
from app.simulator.audio import trim_silence
from app.simulator.wire import FRAME_BYTES, MULAW_SILENCE
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.asgi import LoopbackServer
from tests.fakes.deepgram_server import ListenEngine, ListenOptions, Segment
from tests.fakes.elevenlabs_server import ElevenLabsFake

DG_KEY, AN_KEY, EL_KEY = "dg-bench-key", "sk-ant-bench-key", "xi-bench-key"
GREETING = "Sunrise Dental, Ava speaking."

# (caller line, the agent's reply, barge in this many ms after the previous reply starts)
CONVERSATION: tuple[tuple[str, str, int | None], ...] = (
    (
        "Hi I would like to book a cleaning appointment please",
        "Of course. We have openings tomorrow and on Friday. Which day would suit you best?",
        None,
    ),
    ("Tomorrow at ten in the morning", "Tomorrow at ten is free. May I have your name?", 700),
    ("My name is Alex Morgan", "Thank you Alex. You are all set for tomorrow at ten.", None),
    ("No that is everything thank you", "You are welcome. Goodbye.", None),
)
FALLBACK_REPLY = "Sorry. Could you say that again?"

_FRAME = 160  # 20 ms at 8 kHz
_VOICED = 300.0  # the fake Deepgram's own voicing threshold (RMS of 16-bit samples)
_TOKEN = re.compile(r"\S+\s*")  # how the fake Claude cuts a reply into tokens


@dataclass(frozen=True, slots=True)
class Latency:
    """What each fake injects (ms), from the production latency budget."""

    stt_final_ms: float = 100.0  # after the service's endpoint
    llm_first_token_ms: float = 200.0
    llm_tokens_per_s: float = 40.0
    tts_first_audio_ms: float = 80.0
    tts_speed: float = 2.0  # audio delivered this many times faster than real time


def _normalise(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def envelope(pcm: bytes) -> np.ndarray:
    x = np.frombuffer(pcm[: len(pcm) // (2 * _FRAME) * 2 * _FRAME], dtype="<i2")
    frames = x.astype(np.float64).reshape(-1, _FRAME)
    return np.sqrt(np.mean(frames**2, axis=1))


class ClipRecogniser:
    """Words for a PCM segment: the line whose clip's envelope matches it, cut to the part
    heard so far (interim results see a prefix)."""

    def __init__(self, clips: dict[str, bytes]) -> None:
        self._refs = []
        for text, clip in clips.items():
            env = envelope(to_pcm16(clip, Encoding.MULAW))
            voiced = np.nonzero(env > _VOICED)[0]
            self._refs.append((text, np.log1p(env[voiced[0] : voiced[-1] + 1])))
        self.misses = 0

    def __call__(self, pcm: bytes) -> str:
        env = envelope(pcm)
        voiced = np.nonzero(env > _VOICED)[0]
        if not voiced.size:
            return ""
        seg = np.log1p(env[voiced[0] : voiced[-1] + 1])
        best, best_err = None, 0.25  # exact audio matches at ~0; other lines at > 1
        for text, ref in self._refs:
            n = min(seg.size, ref.size)
            if seg.size > ref.size + 2:
                continue
            err = float(np.mean(np.abs(seg[:n] - ref[:n])))
            if err < best_err:
                best, best_err = (text, ref), err
        if best is None:
            self.misses += 1
            return ""
        text, ref = best
        words = text.split()
        return " ".join(words[: max(1, round(len(words) * min(1.0, seg.size / ref.size)))])


@dataclass
class Responder:
    """The fake Claude's answers: a fixed reply per caller line. Requests with another system
    prompt (the call record's outcome summary after the call) get a fixed JSON answer."""

    replies: dict[str, str]
    system: str
    misses: int = 0
    missed: list[str] = field(default_factory=list)  # what it was asked instead (first few)
    other: int = 0

    def __call__(self, body: dict) -> list:
        system = body.get("system", "")
        if isinstance(system, list):
            system = " ".join(b.get("text", "") for b in system)
        if system.strip() != self.system.strip():
            self.other += 1
            return [("text", '{"outcome": "booked", "summary": "Cleaning booked."}')]
        content = body["messages"][-1]["content"]
        if isinstance(content, list):
            content = " ".join(b.get("text", "") for b in content if b.get("type") == "text")
        reply = self.replies.get(_normalise(content))
        if reply is None:
            self.misses += 1
            if len(self.missed) < 5:
                self.missed.append(content[:120])
            reply = FALLBACK_REPLY
        return [("text", reply)]


class PreciseAnthropicFake(AnthropicFake):
    """The fake Claude with its latency on absolute deadlines: token k leaves at request +
    first token + k / rate. The plain fake sleeps between tokens, so its lateness adds up token
    by token and would be counted as ours."""

    def __init__(self, first_token_ms: float, tokens_per_s: float, **kw: Any) -> None:
        super().__init__(**kw)  # no latency of its own: it is applied here
        self.at_first_token_s = first_token_ms / 1000
        self.token_s = 1 / tokens_per_s

    async def _sse(self, body: dict, blocks: list, fault: str | None) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        start, k = loop.time(), 0
        async for ev in super()._sse(body, blocks, fault):
            if ev.startswith("event: content_block_delta"):
                k += 1
                due = start + self.at_first_token_s + k * self.token_s
                await asyncio.sleep(max(0.0, due - loop.time()))
            yield ev


class PreciseElevenLabsFake(ElevenLabsFake):
    """The fake ElevenLabs with chunk ``i`` (100 ms of audio) leaving at request + first audio
    + i * interval, on absolute deadlines like ``PreciseAnthropicFake``."""

    def __init__(self, first_audio_ms: float, chunk_interval_ms: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.at_first_s = first_audio_ms / 1000
        self.interval_s = chunk_interval_ms / 1000

    async def _chunks(
        self, audio: bytes, fmt: AudioFormat, drop: bool = False
    ) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        async for i, chunk in _enumerate(super()._chunks(audio, fmt, drop)):
            await asyncio.sleep(
                max(0.0, start + self.at_first_s + i * self.interval_s - loop.time())
            )
            yield chunk


async def _enumerate(items: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    i = 0
    async for item in items:
        yield i, item
        i += 1


def tokens_to_first_piece(reply: str) -> int:
    """Tokens the model must write before the session hands its first piece to TTS."""
    splitter = SentenceSplitter()
    tokens = _TOKEN.findall(reply)
    for k, token in enumerate(tokens, start=1):
        if splitter.push(token):
            return k
    return len(tokens)  # one sentence: spoken when the model is done


class ExactEndpointEngine(ListenEngine):
    """The fake's engine with its endpoint on an exact frame. It sums audio time in floats, so
    "300 ms of silence" tests true on the 15th or the 16th silent frame depending on where in
    the stream the utterance ends; the benchmark subtracts the endpoint wait exactly, so it
    needs it on the same frame every time. A nanosecond of slack does that."""

    @property
    def _last_voiced(self) -> float:
        return self.__last_voiced - 1e-9

    @_last_voiced.setter
    def _last_voiced(self, value: float) -> None:
        self.__last_voiced = value


def endpoint_frames(clip: bytes, query: dict[str, list[str]]) -> int:
    """Frames of silence after a clip's last frame until the fake Deepgram (with the options
    the server asked for) sends the final result that ends the utterance."""
    engine = ExactEndpointEngine(ListenOptions.from_query(query), interim_every_ms=None)
    silence = MULAW_SILENCE * FRAME_BYTES
    for _ in range(10):
        engine.feed(silence)
    for i in range(0, len(clip), FRAME_BYTES):
        frame = clip[i : i + FRAME_BYTES]
        engine.feed(frame + MULAW_SILENCE * (FRAME_BYTES - len(frame)))
    for n in range(1, 500):
        if any(isinstance(x, Segment) and x.speech_final for x in engine.feed(silence)):
            return n
    raise ValueError("the fake recogniser never ended the utterance")


def speech_end_frames(clip: bytes) -> int:
    """Frames of silence after a clip's last frame until the server's VAD ends the run."""
    vad = VoiceActivity(8000)
    for i in range(0, len(clip), FRAME_BYTES):
        frame = clip[i : i + FRAME_BYTES]
        vad.feed(to_pcm16(frame + MULAW_SILENCE * (FRAME_BYTES - len(frame)), Encoding.MULAW))
    silence = to_pcm16(MULAW_SILENCE * FRAME_BYTES, Encoding.MULAW)
    for n in range(1, 500):
        if any(isinstance(ev, SpeechEnd) for ev in vad.feed(silence)):
            return n
    raise ValueError("the VAD never ended the run")


def barge_in_frames(clip: bytes, min_speech_ms: int) -> int:
    """Frames after the first one until the server's VAD has heard ``min_speech_ms`` of speech
    (when it pauses the agent)."""
    vad = VoiceActivity(8000)
    for n, i in enumerate(range(0, len(clip), FRAME_BYTES)):
        vad.feed(to_pcm16(clip[i : i + FRAME_BYTES], Encoding.MULAW))
        if vad.speaking and vad.speech_ms >= min_speech_ms:
            return n
    raise ValueError("the clip is too short to barge in")


@dataclass
class Script:
    lines: list[tuple[str, bytes, str, int | None]]  # text, clip, reply, barge_in_ms

    @classmethod
    def render(cls, turns: int) -> Script:
        chosen = CONVERSATION[: max(1, min(turns, len(CONVERSATION)))]
        lines = []
        for text, reply, barge in chosen:
            clip = trim_silence(render(text, MULAW_8K))
            lines.append((text, clip, reply, barge))
        return cls(lines)


@dataclass
class Fakes:
    latency: Latency
    deepgram: object = None
    anthropic: AnthropicFake = field(default_factory=AnthropicFake)
    elevenlabs: ElevenLabsFake = field(default_factory=ElevenLabsFake)
    recogniser: ClipRecogniser | None = None
    responder: Responder | None = None
    env: dict[str, str] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def running_fakes(script: Script, latency: Latency) -> AsyncIterator[Fakes]:
    from tests.fakes import deepgram_server
    from tests.fakes.deepgram_server import DeepgramFake

    # The fake builds its engine by this module-level name; in this process it is the exact one.
    deepgram_server.ListenEngine = ExactEndpointEngine  # type: ignore[misc]

    recogniser = ClipRecogniser({text: clip for text, clip, _, _ in script.lines})
    responder = Responder(
        {_normalise(text): reply for text, _, reply, _ in script.lines},
        AgentSettings().system_prompt,
    )
    deepgram = DeepgramFake(
        api_key=DG_KEY,
        recogniser=recogniser,
        final_delay_ms=latency.stt_final_ms,
        carry_context=True,  # a line cut at a short pause is still recognised as that line
    )
    anthropic = PreciseAnthropicFake(
        latency.llm_first_token_ms, latency.llm_tokens_per_s, api_key=AN_KEY, responder=responder
    )
    elevenlabs = PreciseElevenLabsFake(
        latency.tts_first_audio_ms,
        100.0 / latency.tts_speed,  # the fake sends 100 ms chunks
        api_key=EL_KEY,
    )
    async with (
        deepgram,
        LoopbackServer(anthropic.app()) as an_srv,
        LoopbackServer(elevenlabs.app()) as el_srv,
    ):
        env = {
            "DEEPGRAM_API_KEY": DG_KEY,
            "DEEPGRAM_URL": deepgram.ws_url,
            "ANTHROPIC_API_KEY": AN_KEY,
            "ANTHROPIC_BASE_URL": an_srv.url,
            "ELEVENLABS_API_KEY": EL_KEY,
            "ELEVENLABS_BASE_URL": el_srv.url,
        }
        yield Fakes(latency, deepgram, anthropic, elevenlabs, recogniser, responder, env)
