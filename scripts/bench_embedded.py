"""The embedded providers' reply time, for ``make bench``: ``voice-agent serve`` with no API keys
(Whisper tiny.en, the eSpeak voice, the scripted agent) and the simulated Twilio caller of
``voice-agent call``, one call at a time.

Two conversations: the default one of ``voice-agent call`` (short lines, each decoded whole),
and one of long turns with pauses, run with the recogniser's pieces on (the default) and off
(``WHISPER_PIECE_MS=0``), so the report shows what transcribing while the caller speaks saves.
The server gets all the machine's CPUs: Whisper decodes on two threads, as under ``make run``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from bench_server import ServerProcess

from app.core.audio import MULAW_8K
from app.providers.local_tts import render
from app.simulator import DEFAULT_CONVERSATION, CallerLine, CallOptions, simulate_call

# Long turns: phrases with the pauses of someone explaining (300 ms), 8-10 s each.
LONG_TURNS: tuple[tuple[str | int, ...], ...] = (
    (
        "I have a question about my bill.",
        300,
        "I was charged twice last month for the same cleaning,",
        300,
        "and I would like to know who I should talk to about a refund.",
    ),
    (
        "My name is Alex Morgan,",
        300,
        "and I need to move my appointment from Monday to Friday,",
        300,
        "because I have to work on Monday morning.",
    ),
)


def long_line(parts: tuple[str | int, ...]) -> CallerLine:
    silence = b"\xff"  # µ-law 0
    audio = b"".join(
        silence * MULAW_8K.bytes_for_ms(p) if isinstance(p, int) else render(p, MULAW_8K)
        for p in parts
    )
    return CallerLine(audio=audio)


def embedded_env(auth_token: str, piece_ms: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_URL", "_DSN"))}
    env.update(
        {
            "TWILIO_AUTH_TOKEN": auth_token,
            "WORKERS": "1",
            "LOG_LEVEL": "info",
            "CAMPAIGN_DIALER": "false",
            "STT_PROVIDER": "auto",
            "LLM_PROVIDER": "auto",
            "TTS_PROVIDER": "auto",
        }
    )
    if piece_ms is not None:
        env["WHISPER_PIECE_MS"] = str(piece_ms)
    return env


async def replies(
    env: dict[str, str], lines: list[CallerLine], calls: int, auth_token: str, cpus: set[int]
) -> list[float]:
    """Reply times (caller's speech end to the agent's first audio) over ``calls`` calls."""
    out: list[float] = []
    with tempfile.TemporaryDirectory(prefix="voice-agent-bench-embedded-") as tmp:
        server = ServerProcess(env, Path(tmp), cpus)
        server.start()
        try:
            await server.wait_ready(within_s=120)
            options = CallOptions(auth_token=auth_token)
            for _ in range(calls):
                result = await simulate_call(server.url, lines, options)
                if not result.ok:
                    raise RuntimeError(f"embedded call failed: {result.error or result.violations}")
                out += [t.latency_ms for t in result.turns[1:] if t.latency_ms is not None]
        finally:
            server.stop()
    return out


def _summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 1) if values else None,
        "max": round(max(values), 1) if values else None,
        "values": [round(v) for v in values],
    }


async def embedded(
    auth_token: str, cpus: set[int], calls: int = 3, long_calls: int = 2, turns: int | None = None
) -> dict:
    """``cpus``: the server's (all the machine's, like ``make run``); ``turns``: say only the
    first lines of each conversation (a smoke run)."""
    default = [CallerLine(text=t) for t in DEFAULT_CONVERSATION[:turns]]
    long = [long_line(p) for p in LONG_TURNS[:turns]]
    runs = {
        "default": (embedded_env(auth_token), default, calls),
        "long_pieces": (embedded_env(auth_token), long, long_calls),
        "long_whole": (embedded_env(auth_token, piece_ms=0), long, long_calls),
    }
    out: dict = {"cpus": sorted(cpus)}
    for name, (env, lines, n) in runs.items():
        out[name] = _summary(await replies(env, lines, n, auth_token, cpus))
    return out
