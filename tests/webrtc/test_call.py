"""Whole calls over WebRTC: a real aiortc caller against the real server and agent core.

Embedded local providers only (Whisper tiny.en, the scripted receptionist, eSpeak NG); the
caller's lines are eSpeak speech sent as Opus over a real peer connection on loopback.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.core.audio import CANONICAL
from app.providers.local_tts import render
from app.providers.scripted_parse import HOURS_SUMMARY
from app.transports.webrtc import WebCall, WebRtcManager
from tests.webrtc.conftest import local_context, serve
from tests.webrtc.peer import CallerPeer

pytestmark = pytest.mark.slow


def speech(text: str) -> bytes:
    # trailing silence lets the recogniser's endpointing close the utterance
    return render(text, CANONICAL) + bytes(CANONICAL.bytes_for_ms(900))


async def live_call(srv, caller: CallerPeer) -> WebCall:
    manager: WebRtcManager = srv.ctx.webrtc

    def started() -> bool:
        web_call = manager.calls.get(caller.call_id)
        return web_call is not None and web_call.runner is not None

    await caller.wait_until(started)
    return manager.calls[caller.call_id]


async def test_two_caller_lines_get_the_agents_replies(loopback_ice) -> None:
    ctx = await local_context()
    loop = asyncio.get_running_loop()
    async with serve(ctx) as srv, httpx.AsyncClient() as http:
        caller = CallerPeer(srv.url)
        try:
            await caller.connect(http)
            web_call = await live_call(srv, caller)
            runner = web_call.runner
            greeting = await caller.wait_caption("agent", "how can I help")
            assert greeting["interrupted"] is False
            await caller.wait_silence()

            # Line 1: opening hours. The agent's captions come sentence by sentence, each once
            # it has been played.
            mark = len(caller.captions)
            asked = loop.time()
            await caller.say(speech("What are your opening hours?"))
            heard = await caller.wait_caption("caller", "hours")
            await caller.wait_caption("agent", "anything else", after=mark)
            reply = " ".join(c["text"] for c in caller.captions[mark:] if c["role"] == "agent")
            assert reply == HOURS_SUMMARY + " Is there anything else I can help you with?"
            await caller.wait_silence()
            # the reply was heard as audio too: about 6 s of it, arriving paced, not in a burst
            assert caller.audible_between(asked, loop.time()) * 0.02 > 3.0

            # Line 2: booking.
            mark = len(caller.captions)
            asked = loop.time()
            await caller.say(speech("I would like to book an appointment."))
            await caller.wait_caption("caller", "appointment", after=mark)
            reply = await caller.wait_caption("agent", "what day", after=mark)
            await caller.wait_silence()
            assert caller.audible_between(asked, loop.time()) * 0.02 > 1.0

            # The captions are the core's own transcript records, in order; per-turn latency
            # records exist as on the phone path.
            shown = [(c["role"], c["text"]) for c in caller.captions if c["type"] == "caption"]
            assert shown == [(line.role, line.text) for line in runner.transcript]
            assert [r for r, _ in shown].count("caller") == 2
            assert not any(line.interrupted for line in runner.transcript)
            assert heard["text"] in [line.text for line in runner.transcript]
            assert len(runner.turns) == 2
            for turn in runner.turns:
                stages = turn.stages_ms()
                assert stages["total"] is not None and 0 < stages["total"] < 5000
            assert web_call.frames_in > 100  # the caller's Opus stream reached the core

            # The caller hangs up: the call ends and is unregistered.
            caller.hang_up()
            await caller.wait_until(lambda: not ctx.calls and not srv.ctx.webrtc.calls)
            assert runner.ended and runner.end_reason == "caller hung up"
        finally:
            await caller.close()


async def test_barge_in_stops_the_agent_and_trims_its_history(loopback_ice) -> None:
    ctx = await local_context()
    loop = asyncio.get_running_loop()
    async with serve(ctx) as srv, httpx.AsyncClient() as http:
        caller = CallerPeer(srv.url)
        try:
            await caller.connect(http)
            runner = (await live_call(srv, caller)).runner
            await caller.wait_caption("agent", "how can I help")
            await caller.wait_silence()

            await caller.say(speech("What are your opening hours?"))
            await caller.wait_caption("caller", "hours")
            started = await caller.wait_audible()  # the ~6 s reply starts playing
            await asyncio.sleep(1.5)
            mark = len(caller.captions)
            interrupted_at = loop.time()
            await caller.say(speech("I would like to book an appointment."))

            cut = await caller.wait_caption("agent", after=mark)
            assert cut["interrupted"] is True
            # what the caller heard: a real prefix of the reply, about 1.5-3 s of it
            assert HOURS_SUMMARY.startswith(cut["text"].rstrip(" .,…-"))
            assert 0 < len(cut["text"]) < len(HOURS_SUMMARY) // 2

            await caller.wait_caption("caller", "appointment", after=mark)
            await caller.wait_caption("agent", "what day", after=mark)

            # The agent's voice stopped soon after the caller spoke over it, well before the
            # ~6 s reply would have ended.
            quiet = [
                h.at
                for h in caller.heard
                if interrupted_at < h.at and h.rms <= 300 and h.at - started < 5.0
            ]
            assert quiet, "the agent kept talking over the caller"

            # The core trimmed its history to what was heard, as on the phone path.
            interrupted = [line for line in runner.transcript if line.interrupted]
            assert [line.text for line in interrupted] == [cut["text"]]
            assistant = [m for m in runner.session.history if m.role == "assistant"]
            assert assistant[0].interrupted and assistant[0].content == cut["text"]
            assert any(e.kind == "barge_in" for e in runner.events)

            # The agent ends the call: its goodbye plays, then the page is told and the peer
            # connection closes from the server's side.
            await caller.wait_silence()
            mark = len(caller.captions)
            await caller.say(speech("No, that's all. Goodbye."))
            await caller.wait_caption("agent", "goodbye", after=mark)
            await caller.wait_until(lambda: any(c["type"] == "hangup" for c in caller.captions))
            await caller.wait_until(lambda: caller.pc.connectionState == "closed")
            assert runner.ended and not ctx.calls
        finally:
            await caller.close()
