"""The post-call webhook against a local receiver: signed, retried with backoff, delivered
exactly once per call, also across a restart; the outcome lands on the call record."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.callcentre.call import CallFeatures
from app.callcentre.outcome import from_facts, parse
from app.callcentre.postcall import SIGNATURE_HEADER, PostCall, verify
from app.core.records import TranscriptLine
from app.store import Store
from app.store.calls import open_call
from app.store.schema import calls, post_call_webhooks
from tests.callcentre.support import CALL_SID, inbound, wait_for
from tests.fakes.twilio_api import serve

SECRET = "webhook-secret-0123456789"


@dataclass
class Receiver:
    """Fails the first ``failures`` requests with 503, then answers 200."""

    failures: int
    seen: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        status = 503 if len(self.seen) < self.failures else 200
        self.seen.append((dict(request.headers), body, status))
        return Response(status_code=status)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])


@dataclass
class Ctx:
    providers: Any
    store: Any = None
    call_records: Any = None


@dataclass
class Finished:
    transcript: list[TranscriptLine]
    end_reason: str = "end_call"


def booking_call() -> tuple[CallFeatures, Finished]:
    said = [
        ("caller", "I'd like to book a cleaning on Wednesday at 10 am"),
        ("agent", "Can I have your name, please?"),
        ("caller", "My name is Dana Smith"),
        ("agent", "So that's an appointment on Wednesday at 10 am for Dana Smith. "
                  "Shall I book it? Say yes, or press 1."),
        ("caller", "yes"),
    ]  # fmt: skip
    lines = [TranscriptLine(role, text, float(i))  # type: ignore[arg-type]
             for i, (role, text) in enumerate(said)]  # fmt: skip
    features = CallFeatures(inbound(), "reception", None)
    return features, Finished(lines)


class Scripted:
    name = "scripted"


async def test_delivered_exactly_once_with_a_valid_signature_after_two_failures(tmp_path):
    receiver = Receiver(failures=2)
    store = await Store.open(f"sqlite:///{tmp_path / 'calls.db'}")
    try:
        async with store.db.tx() as conn:
            await open_call(conn, store.db, call_id=CALL_SID, now=1.0)
        ctx = Ctx(providers=type("P", (), {"llm": Scripted()})(), store=store)
        async with serve(receiver.app()) as base:
            postcall = PostCall(ctx, f"{base}/hook", SECRET, retry_base_s=0.05)
            postcall.start()
            features, runner = booking_call()
            postcall.submit(features, runner)
            postcall.submit(features, runner)  # a second job for the same call
            await wait_for(lambda: any(s == 200 for *_, s in receiver.seen), within=10)
            await asyncio.sleep(0.3)  # time for a wrong second delivery to show up
            await postcall.aclose()

            # A restarted server with the same database does not deliver it again.
            again = PostCall(ctx, f"{base}/hook", SECRET, retry_base_s=0.05)
            await again.process(postcall_job(features, runner))
            assert await again.send_due() == 0
            await again.aclose()

        async with store.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(calls.c.outcome, calls.c.summary))).one()
            delivery = (await conn.execute(sa.select(post_call_webhooks))).mappings().one()
    finally:
        await store.close()

    statuses = [status for *_, status in receiver.seen]
    assert statuses == [503, 503, 200]
    keys = {headers["idempotency-key"] for headers, _, _ in receiver.seen}
    assert keys == {CALL_SID}
    assert [h["x-delivery-attempt"] for h, _, _ in receiver.seen] == ["1", "2", "3"]
    for headers, body, _ in receiver.seen:
        assert verify(SECRET, headers[SIGNATURE_HEADER.lower()], body, time.time())
        assert not verify("another-secret", headers[SIGNATURE_HEADER.lower()], body, time.time())
    payload = json.loads(receiver.seen[-1][1])
    assert payload["call_id"] == CALL_SID
    assert payload["outcome"] == "booked"
    assert payload["summary"] == "Appointment booked for Dana Smith on Wednesday at 10 am."
    assert (row.outcome, row.summary) == ("booked", payload["summary"])
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 3)


def postcall_job(features: CallFeatures, runner: Finished) -> Any:
    from app.callcentre.postcall import Job

    return Job(features.call, features.agent_name, tuple(runner.transcript), runner.end_reason,
               None, None, ())  # fmt: skip


async def test_a_pending_delivery_survives_a_restart(tmp_path):
    receiver = Receiver(failures=1)
    store = await Store.open(f"sqlite:///{tmp_path / 'calls.db'}")
    try:
        ctx = Ctx(providers=type("P", (), {"llm": Scripted()})(), store=store)
        async with serve(receiver.app()) as base:
            first = PostCall(ctx, f"{base}/hook", SECRET, retry_base_s=60.0)
            features, runner = booking_call()
            await first.process(postcall_job(features, runner))
            assert await first.send_due() == 0  # 503: the next try is a minute away
            await first.aclose()  # the server stops

            later = time.time() + 61
            second = PostCall(ctx, f"{base}/hook", SECRET, clock=lambda: later)
            assert await second.send_due() == 1
            assert await second.send_due() == 0
            await second.aclose()
    finally:
        await store.close()
    assert [status for *_, status in receiver.seen] == [503, 200]


async def test_a_refusing_receiver_is_not_hammered(tmp_path):
    async def refuse(request: Request) -> Response:
        seen.append(1)
        return Response(status_code=400)

    seen: list[int] = []
    ctx = Ctx(providers=type("P", (), {"llm": Scripted()})())
    async with serve(Starlette(routes=[Route("/hook", refuse, methods=["POST"])])) as base:
        postcall = PostCall(ctx, f"{base}/hook", SECRET, retry_base_s=0.01)
        features, runner = booking_call()
        await postcall.process(postcall_job(features, runner))
        await postcall.send_due()
        await asyncio.sleep(0.05)
        assert await postcall.send_due() == 0
        assert await postcall.deliveries().status(CALL_SID) == "failed"
        await postcall.aclose()
    assert seen == [1]


def test_outcome_from_facts_and_model_replies() -> None:
    nobody = from_facts([], "idle", None)
    assert (nobody.outcome, nobody.source) == ("no_response", "facts")
    line = TranscriptLine("caller", "hi", 0.0)
    assert from_facts([line], "transfer_call", "transferred").outcome == "transferred"
    parsed = parse('Sure: {"outcome": "Booked", "summary": "Booked a  cleaning."}')
    assert parsed is not None
    assert (parsed.outcome, parsed.summary) == ("booked", "Booked a cleaning.")
    odd = parse('{"outcome": "sold a car", "summary": "x"}')
    assert odd is not None and odd.outcome == "other"
    assert parse("no json here") is None



async def test_the_readmes_booking_demo_is_labelled_booked():
    """The scripted receptionist's replies reach the transcript sentence by sentence; the
    outcome replay must read the whole reply as the question the caller answered."""
    import datetime as dt
    import re

    from app.callcentre.outcome import scripted
    from app.core.providers import LlmRequest, Message, TextDelta
    from app.core.records import TranscriptLine
    from app.providers.scripted import ScriptedAgent
    from app.simulator.plan import DEFAULT_CONVERSATION

    agent = ScriptedAgent()
    greeting = "Hello, thank you for calling Sunrise Dental. This is Ava. How can I help you?"
    history = [Message("assistant", greeting)]
    transcript = [TranscriptLine("agent", greeting, 0.0)]
    for line in DEFAULT_CONVERSATION:
        history.append(Message("user", line))
        transcript.append(TranscriptLine("caller", line, 0.0))
        request = LlmRequest(system="", messages=tuple(history))
        reply = "".join([d.text async for d in agent.stream(request) if isinstance(d, TextDelta)])
        history.append(Message("assistant", reply))
        transcript += [TranscriptLine("agent", s, 0.0)
                       for s in re.split(r"(?<=[.?!])\s+", reply) if s]
    found = scripted(transcript, today=dt.date.today())
    assert found is not None and found.outcome == "booked", found
    assert "Alex Morgan" in found.summary
