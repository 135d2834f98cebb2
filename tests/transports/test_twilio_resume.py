"""A call whose stream drops goes on over a new stream: Twilio's ``<Connect action>`` request
gets a new stream with a single-use resume token, the new stream restores the conversation
from the store, and a call the agent ended on purpose is never revived. Real server, real
local providers, the twilio package's signatures."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

from app.config import AgentSettings, StoreSettings
from app.runtime.context import AppContext, Providers
from app.runtime.phrases import PhraseCache
from tests.transports.test_twilio import (
    FakeTwilio,
    Running,
    call_sid,
    form,
    make_settings,
    media_socket,
    post_voice,
    serve,
    sign,
    stream_parameters,
    wait_for,
)


def settings_for(tmp_path, **agent):
    base = make_settings()
    return dataclasses.replace(
        base,
        store=StoreSettings(database_url=f"sqlite:///{tmp_path / 'calls.db'}"),
        agent=dataclasses.replace(AgentSettings(), **agent),
    )


async def ask_action(srv: Running, twiml: str, n: int, status: str = "in-progress"):
    action = ET.fromstring(twiml).find("./Connect").get("action")
    assert action == f"http://127.0.0.1:{srv.port}/twilio/stream-ended"
    fields = form(call_sid(n), CallStatus=status)
    forged = await post_voice(action, fields, sign(action, fields, token="nope"))
    assert forged.status_code == 403
    resp = await post_voice(action, fields, sign(action, fields))
    assert resp.status_code == 200
    return resp.text


async def voice_twiml(srv: Running, n: int) -> str:
    fields = form(call_sid(n))
    resp = await post_voice(srv.voice_url, fields, sign(srv.voice_url, fields))
    assert resp.status_code == 200
    return resp.text


async def test_a_dropped_stream_is_resumed_with_the_conversation_and_one_record(
    tmp_path, providers: Providers
) -> None:
    ctx = AppContext(settings_for(tmp_path), providers, PhraseCache())
    async with serve(ctx) as srv:
        twiml = await voice_twiml(srv, 1)
        _, params = stream_parameters(twiml)
        async with media_socket(srv) as ws:  # the first stream: the greeting, then a drop
            first = FakeTwilio(ws, 1)
            await first.open(params)
            await first.pump(7.0)
            assert first.marks, "the greeting played"
        await wait_for(lambda: ctx.calls.get(call_sid(1)) is None)

        again = await ask_action(srv, twiml, 1)
        _, resumed = stream_parameters(again)
        assert resumed["resume"] and resumed["token"] != params["token"]
        async with media_socket(srv) as ws:
            second = FakeTwilio(ws, 1)
            await second.open(resumed)
            await wait_for(lambda: ctx.calls.get(call_sid(1)) is not None)
            runner = ctx.calls.get(call_sid(1))
            history = list(runner.session.history)
            await second.pump(5.0)
            await second.stop()
        async with media_socket(srv) as ws:  # the same token again: refused
            replay = FakeTwilio(ws, 1)
            await replay.open(resumed)
            assert await replay.drain_until_closed() == 1008
        await wait_for(lambda: ctx.calls.get(call_sid(1)) is None)
        # the caller hung up: Twilio's request says so, and nothing is resumed
        gone = await ask_action(srv, again, 1, status="completed")
        assert [c.tag for c in ET.fromstring(gone)] == ["Hangup"]
        await ctx.call_records.flush(wait_s=5.0)
        call = await ctx.store.calls.get_call(call_sid(1))

    greeting = ctx.settings.agent.greeting
    assert [(m.role, m.content) for m in history] == [("assistant", greeting)]
    said = [line["text"] for line in call["transcript"] if line["role"] == "agent"]
    assert said[0] == greeting
    assert ctx.settings.agent.script().recovery in said  # said on the new stream
    assert len(said) == len(set(said)), "no line written twice"
    assert second.audio, "the recovery line was heard"
    assert call["end_reason"] == "caller hung up"


async def test_a_call_the_agent_ended_is_never_revived(tmp_path, providers: Providers) -> None:
    ctx = AppContext(settings_for(tmp_path, idle_timeout_s=2.0), providers, PhraseCache())
    async with serve(ctx) as srv:
        twiml = await voice_twiml(srv, 2)
        _, params = stream_parameters(twiml)
        async with media_socket(srv) as ws:
            caller = FakeTwilio(ws, 2)
            await caller.open(params)
            await caller.run_until_closed(within=20)  # idle prompt, then goodbye and hang-up
        answer = await ask_action(srv, twiml, 2)
    assert [c.tag for c in ET.fromstring(answer)] == ["Hangup"]


async def test_a_call_that_keeps_dropping_is_let_go(tmp_path, providers: Providers) -> None:
    ctx = AppContext(settings_for(tmp_path), providers, PhraseCache())
    async with serve(ctx) as srv:
        twiml = await voice_twiml(srv, 3)
        answers = [await ask_action(srv, twiml, 3) for _ in range(4)]
    assert all(stream_parameters(a)[1]["resume"] for a in answers[:3])
    root = ET.fromstring(answers[3])
    assert [c.tag for c in root] == ["Say", "Hangup"]
