"""ElevenLabs streaming synthesis, per sentence over HTTP, in the transport's own format.

For phone calls we ask for ``ulaw_8000``, which is byte for byte what Twilio plays, so audio
goes to the caller untouched; other transports get raw PCM at the rate they need. The default
model is ``eleven_flash_v2_5``, the low-latency one.

Why per-sentence HTTP streaming and not the stream-input websocket: the session already hands
us one sentence at a time while the model is still writing. Measured against the fake (75 ms
injected first-audio latency, a model writing 50 tokens/s, warm connections, median of 5), first
audio came 230 ms after the first token both ways (three runs: 230/230, 227/226, 225/223 ms,
HTTP/socket): both wait for the first sentence, and the socket saves only a request round trip on
an already open connection. The socket would cost a handshake per turn (or one held open per
call, which the service closes after 20 s idle), and the SDK's socket API is sync-only, so it
needs our own client. HTTP keeps one warm connection pool per process and fits
``TextToSpeech.synthesize(text)`` directly. ``tests/providers/test_elevenlabs_latency.py``
re-measures it.

Failures: the SDK's own retries sleep a second or more, so they are off; 429/5xx, connection
errors and a first chunk later than ``first_chunk_timeout_s`` are retried here within
``retry_budget_s``, only before any audio went out. Then we raise and the session plays its
pre-synthesised fallback phrase.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from elevenlabs.client import AsyncElevenLabs
from elevenlabs.core.api_error import ApiError

from app.core.audio import CANONICAL, MULAW_8K, PCM_8K, PCM_48K, AudioChunk, AudioFormat, Encoding
from app.logs import event, get_logger, register_secret
from app.providers.budget import Failure, may_retry

log = get_logger(__name__)
# At DEBUG the SDK and httpx log request URLs and bodies (the agent's words): keep them quiet.
for _name in ("elevenlabs", "httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

PCM_24K = AudioFormat(Encoding.PCM16, 24_000)
OUTPUT_FORMATS: dict[AudioFormat, str] = {
    MULAW_8K: "ulaw_8000",
    CANONICAL: "pcm_16000",
    PCM_48K: "pcm_48000",
    PCM_24K: "pcm_24000",
    PCM_8K: "pcm_8000",
}
_RETRYABLE = {408, 409, 429, 500, 502, 503, 504}


class TtsError(RuntimeError):
    """No audio within the latency budget (after retries), or the request was refused."""


@dataclass(frozen=True, slots=True)
class ElevenLabsOptions:
    first_chunk_timeout_s: float = 1.0  # quoted ~75 ms for flash; 1 s means something is wrong
    stall_timeout_s: float = 2.0  # between chunks once audio flows
    # A service answering errors fast will not get better by the 4th try within a second.
    max_attempts: int = 3
    retry_budget_s: float = 1.5
    connect_timeout_s: float = 1.0


class ElevenLabsTts:
    name = "elevenlabs"
    formats: tuple[AudioFormat, ...] = tuple(OUTPUT_FORMATS)  # µ-law 8 kHz first

    def __init__(
        self,
        api_key: str,
        voice_id: str,
        model_id: str = "eleven_flash_v2_5",
        base_url: str | None = None,
        options: ElevenLabsOptions | None = None,
    ) -> None:
        register_secret(api_key)
        self.voice_id = voice_id
        self.model_id = model_id
        self.options = opts = options or ElevenLabsOptions()
        self.characters = 0  # billed characters, all calls of this process
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(opts.stall_timeout_s, connect=opts.connect_timeout_s)
        )
        self._client = AsyncElevenLabs(
            api_key=api_key,
            base_url=base_url,
            httpx_client=self._http,
            timeout=opts.stall_timeout_s,  # the SDK passes its own (240 s) on every request
        )

    async def synthesize(self, text: str, fmt: AudioFormat) -> AsyncIterator[AudioChunk]:
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"elevenlabs cannot produce {fmt}")
        if not text.strip():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.retry_budget_s
        attempt = 0
        while True:
            attempt += 1
            sent = False
            started = time.perf_counter()
            try:
                carry = b""
                async for data in self._attempt(text, fmt, deadline):
                    data, carry = _align(carry + data, fmt.sample_width)
                    if not data:
                        continue
                    if not sent:
                        sent = True
                        self.characters += len(text)
                        ms = round((time.perf_counter() - started) * 1000)
                        event(log, "tts_first_audio", provider="elevenlabs", ms=ms, attempt=attempt)
                    yield AudioChunk(data, fmt)
                return
            except Failure as failure:
                remaining = deadline - loop.time()
                retry = may_retry(failure, sent, attempt, self.options.max_attempts, remaining)
                event(
                    log,
                    "tts_error",
                    provider="elevenlabs",
                    attempt=attempt,
                    reason=failure.reason,
                    retrying=retry,
                    chars=len(text),
                )
                if not retry:
                    raise TtsError(f"elevenlabs: {failure.reason}") from failure.__cause__
                await asyncio.sleep(failure.wait)

    async def _attempt(self, text: str, fmt: AudioFormat, deadline: float) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=32)
        pump = asyncio.create_task(self._pump(text, fmt, queue))
        loop = asyncio.get_running_loop()
        first = True
        try:
            while True:
                if first:
                    limit = min(
                        self.options.first_chunk_timeout_s, max(0.05, deadline - loop.time())
                    )
                else:
                    limit = self.options.stall_timeout_s
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                    # cancellation that races with a ready item, leaving a zombie stream.
                    async with asyncio.timeout(limit):
                        item = await queue.get()
                except TimeoutError:
                    raise Failure(f"no audio within {limit:.1f}s", first, 0.0) from None
                if item is None:
                    return
                if isinstance(item, Failure):
                    raise item
                first = False
                yield item
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump

    async def _pump(self, text: str, fmt: AudioFormat, queue: asyncio.Queue[Any]) -> None:
        try:
            stream = self._client.text_to_speech.stream(
                self.voice_id,
                text=text,
                model_id=self.model_id,
                output_format=OUTPUT_FORMATS[fmt],
                # no SDK retries (we budget them); pass bytes on as they arrive
                request_options={"max_retries": 0, "chunk_size": None},  # type: ignore[typeddict-item]
            )
            async for data in stream:
                await queue.put(data)
            await queue.put(None)
        except ApiError as exc:
            status = exc.status_code or 0
            await queue.put(Failure(f"HTTP {status}", status in _RETRYABLE, 0.05, exc))
        except httpx.TimeoutException as exc:
            await queue.put(Failure("timeout", True, 0.0, exc))
        except httpx.TransportError as exc:
            await queue.put(Failure(f"connection: {type(exc).__name__}", True, 0.05, exc))

    async def aclose(self) -> None:
        await self._http.aclose()


def _align(data: bytes, width: int) -> tuple[bytes, bytes]:
    """HTTP chunks may split a 16-bit sample: hold back the odd byte for the next chunk."""
    cut = len(data) - len(data) % width
    return data[:cut], data[cut:]


def create(settings: Any) -> ElevenLabsTts:
    """The registry's factory: ``ElevenLabsTts`` from ``app.config.Settings``."""
    cloud = settings.providers.cloud
    if not cloud.elevenlabs_api_key:
        raise ValueError("ELEVENLABS_API_KEY is not set")
    return ElevenLabsTts(
        cloud.elevenlabs_api_key,
        cloud.elevenlabs_voice_id,
        cloud.elevenlabs_model,
        cloud.elevenlabs_base_url,
    )
