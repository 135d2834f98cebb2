"""Keys out for IVRs: ``send_digits`` replaces the call's TwiML with ``<Play digits>`` and a
fresh stream back to us, and the next stream of the same call continues the conversation."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET

from app import callcentre
from telephony.security import StreamTokens, TokenCheck
from tests.callcentre.support import (
    CALL_SID,
    OUR_NUMBER,
    TOKEN,
    EchoSink,
    ReplyLlm,
    context,
    inbound,
    settings,
    tool,
    wait_for,
)
from tests.fakes.twilio_api import FakeCall, FakeTwilio

AGENTS = """
version = 1
default = "ivr"

[agents.ivr]
greeting = "Hello."
tools = ["end_call", "send_digits"]
"""


async def test_send_digits_plays_keys_then_reconnects_and_the_call_continues(tmp_path):
    async with FakeTwilio(account_sid="AC" + "0" * 32) as fake:
        fake.calls[CALL_SID] = FakeCall(CALL_SID, OUR_NUMBER, "+15550123456", "hold", {})
        s = settings(tmp_path, AGENTS, TWILIO_API_BASE_URL=fake.base_url,
                     PUBLIC_URL="https://agent.example.com")  # fmt: skip
        llm = ReplyLlm([("Pressing two.", [tool("send_digits", digits="2w#")])])
        ctx = context(s, llm)
        centre = callcentre.install(ctx)
        sink = EchoSink()
        runner = ctx.new_runner(inbound(), sink)
        sink.runner = runner
        task = asyncio.create_task(ctx.run_call(inbound(), sink, runner))
        await wait_for(lambda: len(sink.marks) >= 1)
        runner.dtmf("#")
        await wait_for(lambda: bool(fake.calls[CALL_SID].updates))
        runner.remote_hangup("stream stopped")  # Twilio stops the old stream
        await asyncio.wait_for(task, 10)
        update = fake.calls[CALL_SID].updates[0]

    doc = ET.fromstring(update["Twiml"])
    assert [child.tag for child in doc] == ["Play", "Connect", "Hangup"]
    assert doc[0].get("digits") == "2w#"
    stream = doc.find("Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://agent.example.com/twilio/media"
    assert doc.find("Connect").get("action") == "https://agent.example.com/twilio/stream-ended"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params["agent"] == "ivr" and params["to"] == OUR_NUMBER
    tokens = StreamTokens.from_auth_token(TOKEN, 120)
    assert tokens.verify(params["token"], CALL_SID, time.time()) is TokenCheck.OK
    # The caller heard what the agent said before the keys were pressed.
    assert [line.text for line in runner.transcript if line.role == "agent"][-1] == "Pressing two."

    # The new stream of the same call picks up the conversation, without a second greeting.
    assert CALL_SID in centre.resume
    again = ctx.new_runner(inbound(), EchoSink())
    history = again.session.history
    assert [m.role for m in history] == ["user", "assistant"]
    assert history[-1].tool_calls[0].name == "send_digits"
    assert again.script.greeting == ""
    assert CALL_SID not in centre.resume
