"""``voice-agent call`` as a user runs it: a real process against the fake agent server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys

import pytest

from app.core.audio import MULAW_8K
from app.providers.local_tts import render
from tests.simulator.fake_agent import AUTH_TOKEN, PUBLIC_URL, FakeAgent, tone

GREETING = "Thank you for calling Sunrise Dental. How can I help you today?"


async def run_cli(*args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PUBLIC_URL", "PORT"}}
    env.update(TWILIO_AUTH_TOKEN=AUTH_TOKEN, COLUMNS="200")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "call",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
async def test_call_prints_the_agents_words_with_latency(tmp_path) -> None:
    agent = FakeAgent(greeting=render(GREETING, MULAW_8K), reply=tone(500, 880))
    out_wav = tmp_path / "call.wav"
    async with agent.serve() as url:
        code, out = await run_cli(
            "--server",
            url,
            "--public-url",
            PUBLIC_URL,
            "--out",
            str(out_wav),
            "I'd like to book an appointment tomorrow at ten",
        )
    assert code == 0, out
    assert "Caller: I'd like to book an appointment tomorrow at ten" in out
    greeting_line = next(line for line in out.splitlines() if "(greeting" in line)
    assert "help" in greeting_line.lower()  # Whisper heard the greeting
    assert "(reply " in out and "hung up by caller" in out
    assert out_wav.stat().st_size > 44
    assert len(agent.streams) == 1 and len(agent.streams[0].speech_starts) == 1


async def test_violation_makes_the_cli_fail() -> None:
    agent = FakeAgent(greeting=tone(200), junk=[json.dumps({"event": "media"})])
    async with agent.serve() as url:
        code, out = await run_cli(
            "--server", url, "--public-url", PUBLIC_URL, "--no-transcribe", "--dtmf", "5"
        )
    assert code == 1, out
    assert "Protocol violation" in out and "wrong_stream_sid" in out
    assert agent.streams[0].dtmf == "5"
    assert out.count("Caller: ") == 5  # the digits, then the default four-line conversation
    assert len(agent.streams[0].speech_starts) >= 4  # (a pause inside a line may split one)


async def test_no_server_means_no_call_and_a_failure() -> None:
    code, out = await run_cli("--server", f"http://127.0.0.1:{unused_port()}", "hello")
    assert code == 1
    assert "Call failed" in out and "voice webhook failed" in out
