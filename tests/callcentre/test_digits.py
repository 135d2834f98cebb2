"""Keypad fields: the pure collector, then a live call where the model asks for an account
number and gets it as one turn despite pauses longer than the session's own keypad timeout."""

from __future__ import annotations

import asyncio

from app import callcentre
from app.callcentre.digits import DigitCollector, FieldRequest
from tests.callcentre.support import (
    EchoSink,
    ReplyLlm,
    context,
    inbound,
    settings,
    tool,
    wait_for,
)


def test_terminator_length_and_timeout_end_a_field() -> None:
    c = DigitCollector()
    c.start(FieldRequest("account", max_digits=4), now=0.0)
    assert c.deadline == 15.0  # time to find the card before the first key
    assert [c.feed(d, 1.0) for d in "12"] == [None, None]
    assert c.deadline == 6.0
    done = c.feed("#", 2.0)
    assert done is not None and (done.digits, done.ended_by) == ("12", "terminator")
    assert done.keys() == ["1", "2", "#"] and not c.active

    c.start(FieldRequest("pin", max_digits=4), now=10.0)
    results = [c.feed(d, 11.0) for d in "98765"]
    assert results[3] is not None and results[3].digits == "9876"
    assert results[3].ended_by == "length" and results[4] is None  # inactive afterwards

    c.start(FieldRequest("dob", inter_digit_timeout_s=5.0), now=20.0)
    c.feed("3", 21.0)
    assert c.expire(25.9) is None
    late = c.expire(26.0)
    assert late is not None and (late.digits, late.ended_by) == ("3", "timeout")


def test_star_terminator_and_stray_symbols() -> None:
    c = DigitCollector()
    c.start(FieldRequest("ref", terminator="*"), now=0.0)
    assert c.feed("#", 0.5) is None  # not this field's terminator: ignored
    assert c.feed("x", 0.6) is None
    c.feed("4", 1.0)
    done = c.feed("*", 1.5)
    assert done is not None and done.digits == "4"


AGENTS = """
version = 1
default = "billing"

[agents.billing]
tools = ["end_call", "collect_digits"]
digits.inter_digit_timeout_s = 4.0
"""


async def test_a_collected_field_reaches_the_model_as_one_keypad_turn(tmp_path) -> None:
    ask = "Please enter your account number, then press pound."
    llm = ReplyLlm([(ask, [tool("collect_digits", field="account number", max_digits=8)]),
                    ("Thank you.", [])])  # fmt: skip
    ctx = context(settings(tmp_path, AGENTS), llm)
    callcentre.install(ctx)
    sink = EchoSink()
    runner = ctx.new_runner(inbound(), sink)
    sink.runner = runner
    features = ctx.callcentre.live[inbound().call_id]
    task = asyncio.create_task(ctx.run_call(inbound(), sink, runner))
    try:
        await wait_for(lambda: len(sink.marks) >= 1)
        runner.dtmf("#")  # an empty keypad turn: the model asks for the account number
        await wait_for(lambda: features.collector.active)
        for digit in "1234":
            runner.dtmf(digit)
        # Longer than the session's own 2 s keypad timeout: still one field.
        await asyncio.sleep(2.3)
        for digit in "5678":
            runner.dtmf(digit)  # the 8th digit completes the field
        await wait_for(lambda: len(llm.requests) == 2, within=5)
    finally:
        runner.shutdown("test over")
        await asyncio.wait_for(task, 15)
    last_user = llm.requests[1].messages[-1]
    assert last_user.role == "user"
    assert last_user.content == "[keypad: 1 2 3 4 5 6 7 8 #]"
    assert features.fields == {"account number": "12345678"}
    assert [t.name for t in llm.requests[0].tools] == ["end_call", "collect_digits"]
