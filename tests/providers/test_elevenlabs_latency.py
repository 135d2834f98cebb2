"""Per-sentence HTTP streaming vs the stream-input websocket: first-audio latency, measured.

A model writes a reply at 50 tokens/s; the fake adds 75 ms before its first audio (ElevenLabs'
quoted flash latency). HTTP: the session's sentence splitter releases the first sentence and one
request streams it. Websocket: the socket is opened when the turn starts (its handshake is off
the clock) and gets every token as written, with a flush where the same splitter cuts the
sentence (flushing at the bare "." instead would win one token, ~20 ms at this rate, by giving
up the look-ahead that keeps "Dr." or "10.30" from splitting). Time is measured
from the model's first token to the first audio byte. Run with ``-s`` to see the numbers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import statistics
import time

from websockets.asyncio.client import connect

from app.core.audio import MULAW_8K
from app.core.text import SentenceSplitter
from app.providers.elevenlabs import ElevenLabsTts
from tests.fakes.asgi import LoopbackServer
from tests.fakes.elevenlabs_server import ElevenLabsFake

KEY = "xi-latency-key"
VOICE = "21m00Tcm4TlvDq8ikWAM"
REPLY = "Sure, I can book that for you. Which day would suit you best this week?"
TOKENS = re.findall(r"\S+\s*", REPLY)
TOKEN_S = 0.02  # 50 tokens per second


async def _llm():
    for i, token in enumerate(TOKENS):
        if i:
            await asyncio.sleep(TOKEN_S)
        yield token


async def http_first_audio(tts: ElevenLabsTts) -> float:
    splitter = SentenceSplitter()
    started = time.perf_counter()
    async for token in _llm():
        for sentence in splitter.push(token):
            async for _chunk in tts.synthesize(sentence, MULAW_8K):
                return time.perf_counter() - started
    raise AssertionError("no sentence")


async def ws_first_audio(base: str) -> float:
    query = "model_id=eleven_flash_v2_5&output_format=ulaw_8000"
    url = f"{base}/v1/text-to-speech/{VOICE}/stream-input?{query}"
    async with connect(url, additional_headers={"xi-api-key": KEY}) as ws:
        await ws.send(json.dumps({"text": " "}))
        started = time.perf_counter()

        async def writer() -> None:
            splitter = SentenceSplitter()  # flush where the session would cut a sentence
            async for token in _llm():
                flush = bool(splitter.push(token))
                await ws.send(json.dumps({"text": token, "flush": flush}))
            await ws.send(json.dumps({"text": ""}))

        task = asyncio.create_task(writer())
        first: float | None = None
        try:
            async for raw in ws:  # read to the end so the socket closes cleanly
                msg = json.loads(raw)
                if first is None and msg.get("audio") and base64.b64decode(msg["audio"]):
                    first = time.perf_counter() - started
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert first is not None, "no audio"
    return first


async def test_http_per_sentence_is_as_fast_as_the_websocket(capsys):
    fake = ElevenLabsFake(api_key=KEY, first_audio_ms=75)
    async with LoopbackServer(fake.app()) as srv:
        tts = ElevenLabsTts(KEY, VOICE, base_url=srv.url)
        try:
            await http_first_audio(tts)  # warm the connection pool, as a running server has
            http = [await http_first_audio(tts) for _ in range(5)]
        finally:
            await tts.aclose()
        ws_base = srv.url.replace("http://", "ws://")
        ws = [await ws_first_audio(ws_base) for _ in range(5)]
    h, w = statistics.median(http) * 1000, statistics.median(ws) * 1000
    with capsys.disabled():
        print(
            f"\nfirst audio after first token, median of 5: http {h:.0f} ms, websocket {w:.0f} ms"
        )
    # The first sentence takes ~7 tokens (~140 ms) to write, plus 75 ms of synthesis.
    assert 200 < h < 320 and 200 < w < 320
    assert h - w < 15  # the websocket saves no more than a request round trip
