"""A cloud recogniser that cannot be reached does not leave the call deaf: the call is taken
by the embedded recogniser, and the caller is answered."""

from __future__ import annotations

import re
import socket

import pytest

from app.core.records import CallEvent, TranscriptLine
from app.simulator import CallOptions, simulate_call

pytestmark = pytest.mark.slow


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens here once it is closed


async def test_deepgram_down_at_call_start_fails_over_to_the_local_recogniser(local_server):  # type: ignore[no-untyped-def]
    env = {
        "STT_PROVIDER": "deepgram",
        "DEEPGRAM_API_KEY": "dg-key-for-a-server-that-is-down",
        "DEEPGRAM_URL": f"ws://127.0.0.1:{closed_port()}",
    }
    async with local_server(**env) as srv:
        assert srv.ctx.providers.stt.name == "deepgram"
        result = await simulate_call(
            srv.url, ("What are your opening hours?",), CallOptions(call_timeout=90)
        )
        records = srv.recorder.by_call[result.call_sid]
    assert result.connected and not result.violations
    assert not any(t.timed_out for t in result.turns)
    errors = [r for r in records if isinstance(r, CallEvent) and r.kind == "provider_error"]
    assert errors and errors[0].detail["provider"] == "stt"
    agent = " ".join(r.text for r in records if isinstance(r, TranscriptLine) and r.role == "agent")
    assert re.search(r"8 am to 6 pm", agent), agent
