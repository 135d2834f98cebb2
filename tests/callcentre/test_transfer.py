"""Transfer to a human against the fake Twilio REST API: the hand-off line plays, then the
live call is redirected with the right TwiML (cold) or bridged through a conference (warm)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest

from app import callcentre
from tests.callcentre.support import (
    CALL_SID,
    COLLEAGUE,
    OUR_NUMBER,
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
default = "reception"

[agents.reception]
numbers = ["+15550100001"]
tools = ["end_call", "transfer_call"]

[agents.reception.transfer]
number = "+15550100999"
mode = "{mode}"
"""
HANDOFF = "Let me put you through to a colleague."


async def run_transfer(tmp_path, mode: str, fake: FakeTwilio):  # type: ignore[no-untyped-def]
    fake.calls[CALL_SID] = FakeCall(CALL_SID, OUR_NUMBER, "+15550123456", "hold", {})
    s = settings(tmp_path, AGENTS.replace("{mode}", mode), TWILIO_API_BASE_URL=fake.base_url)
    reply = (HANDOFF, [tool("transfer_call", reason="billing", summary="Disputes an invoice.")])
    ctx = context(s, ReplyLlm([reply]))
    centre = callcentre.install(ctx)
    sink = EchoSink()
    runner = ctx.new_runner(inbound(), sink)
    sink.runner = runner
    task = asyncio.create_task(ctx.run_call(inbound(), sink, runner))
    await wait_for(lambda: len(sink.marks) >= 1)  # the greeting played
    runner.dtmf("0")
    runner.dtmf("#")  # "[keypad: 0 #]": a caller turn, the model answers with the transfer
    await asyncio.wait_for(task, 10)
    return runner, sink, centre


@pytest.mark.parametrize("mode", ["cold"])
async def test_cold_transfer_redirects_the_call_to_dial_after_the_handoff_line(tmp_path, mode):
    async with FakeTwilio(account_sid="AC" + "0" * 32) as fake:
        runner, sink, centre = await run_transfer(tmp_path, mode, fake)
        updates = fake.calls[CALL_SID].updates
    assert len(updates) == 1
    doc = ET.fromstring(updates[0]["Twiml"])
    assert [child.tag for child in doc] == ["Dial"]
    assert doc[0].text == COLLEAGUE and doc[0].get("timeout") == "30"
    # The caller heard the hand-off line before the call moved, and the stream was not hung
    # up on: Twilio runs the new TwiML.
    agent_lines = [line.text for line in runner.transcript if line.role == "agent"]
    assert agent_lines[-1] == HANDOFF
    assert sink.hangups == []
    assert runner.end_reason == "transfer_call"
    assert centre.postcall is not None


async def test_warm_transfer_holds_the_caller_and_briefs_the_colleague(tmp_path):
    async with FakeTwilio(account_sid="AC" + "0" * 32) as fake:
        runner, sink, _ = await run_transfer(tmp_path, "warm", fake)
        caller_updates = fake.calls[CALL_SID].updates
        creates = list(fake.creates)
        await fake.wait_idle()
    hold = ET.fromstring(caller_updates[0]["Twiml"])
    conference = hold.find("Dial/Conference")
    assert conference is not None and conference.text == f"transfer-{CALL_SID}"
    assert conference.get("startConferenceOnEnter") == "false"
    assert len(creates) == 1
    leg = creates[0]
    assert leg.to == COLLEAGUE and leg.params["From"] == [OUR_NUMBER]
    brief = ET.fromstring(leg.params["Twiml"][0])
    assert [child.tag for child in brief] == ["Say", "Dial"]
    assert "Disputes an invoice." in (brief[0].text or "")
    joined = brief.find("Dial/Conference")
    assert joined is not None and joined.text == conference.text
    assert joined.get("startConferenceOnEnter") == "true"
    assert sink.hangups == []


async def test_transfer_refused_by_twilio_hangs_up_and_records_the_failure(tmp_path):
    async with FakeTwilio(account_sid="AC" + "0" * 32) as fake:
        # No such call on the fake: the update answers 404, so the call cannot move.
        s = settings(tmp_path, AGENTS.replace("{mode}", "cold"),
                     TWILIO_API_BASE_URL=fake.base_url)  # fmt: skip
        ctx = context(s, ReplyLlm([(HANDOFF, [tool("transfer_call", reason="x")])]))
        callcentre.install(ctx)
        sink = EchoSink()
        runner = ctx.new_runner(inbound(), sink)
        sink.runner = runner
        features = ctx.callcentre.live[inbound().call_id]
        task = asyncio.create_task(ctx.run_call(inbound(), sink, runner))
        await wait_for(lambda: len(sink.marks) >= 1)
        runner.dtmf("#")
        await asyncio.wait_for(task, 10)
    assert sink.hangups == ["transfer_call"]
    assert features.transfer_result == "transfer_failed"


def test_an_agent_with_its_own_voice_keeps_the_recogniser_failover(tmp_path):
    from app import callcentre
    from app.runtime.context import Providers
    from tests.callcentre.support import EchoSink, SilenceTts, SilentStt, context, inbound
    from tests.callcentre.support import settings as make_settings

    toml = 'version = 1\ndefault = "a"\n[agents.a]\nvoice = "en-gb"\n'
    ctx = context(make_settings(tmp_path, toml), llm=None)
    tts = SilenceTts()
    tts.voice = "en-us"
    fallback = SilentStt()
    ctx.providers = Providers(stt=SilentStt(), llm=None, tts=tts, stt_fallback=fallback)
    callcentre.install(ctx)
    runner = ctx.new_runner(inbound(), EchoSink())
    assert runner.providers.tts.voice == "en-gb"
    assert runner.providers.stt_fallback is fallback


def test_a_resumed_call_keeps_its_agent_history_and_keypad_field_names(tmp_path):
    from app import callcentre
    from app.core.providers import Message
    from app.runtime.hooks import Resumed
    from tests.callcentre.support import EchoSink, context, inbound
    from tests.callcentre.support import settings as make_settings

    toml = 'version = 1\ndefault = "a"\n[agents.a]\ngreeting = "Hi from A."\n'
    ctx = context(make_settings(tmp_path, toml), llm=None)
    callcentre.install(ctx)
    history = (Message("assistant", "Hi from A."), Message("user", "My account, please."))
    runner = ctx.new_runner(inbound(), EchoSink(), Resumed(history, ("account",)))
    assert list(runner.session.history) == list(history)
    assert runner.script.greeting == runner.script.recovery  # no second hello
    assert ctx.callcentre.live[inbound().call_id].fields == {"account": ""}
