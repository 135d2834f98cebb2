"""Recording with consent: announced before the greeting, started through the fake Twilio REST
API with a status callback, and the signed callback puts the recording URL on the call record."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

import httpx
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from app import callcentre
from app.store import Store
from app.store.calls import open_call
from app.store.schema import calls
from tests.callcentre.support import (
    ACCOUNT,
    CALL_SID,
    EchoSink,
    ReplyLlm,
    context,
    inbound,
    settings,
    wait_for,
)
from tests.fakes.twilio_api import FakeTwilio, bind_local, serve

AGENTS = """
version = 1
default = "reception"

[agents.reception]
greeting = "Hello, how can I help?"

[agents.reception.recording]
enabled = true
announcement = "This call is recorded."
channels = "mono"
"""
RECORDING_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/RE{'1' * 32}"


async def test_recording_starts_with_a_callback_and_the_signed_callback_stores_the_url(tmp_path):
    recordings: list[dict[str, list[str]]] = []

    async def create_recording(request: Request) -> JSONResponse:
        assert fake.check_auth(request)
        form: dict[str, list[str]] = {}
        for key, value in parse_qsl((await request.body()).decode()):
            form.setdefault(key, []).append(value)
        recordings.append(form)
        sid = request.path_params["sid"]
        return JSONResponse({"sid": "RE" + "1" * 32, "call_sid": sid, "status": "in-progress",
                             "account_sid": ACCOUNT}, status_code=201)  # fmt: skip

    fake = FakeTwilio(account_sid=ACCOUNT)
    fake.add_route(
        "/2010-04-01/Accounts/{account}/Calls/{sid}/Recordings.json", create_recording, ["POST"]
    )
    sock = bind_local()
    public = f"http://127.0.0.1:{sock.getsockname()[1]}"
    store = await Store.open(f"sqlite:///{tmp_path / 'calls.db'}")
    try:
        await _scenario(fake, sock, public, store, recordings, tmp_path)
        async with store.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(calls.c.recording_url, calls.c.id))).one()
    finally:
        await store.close()
    assert (row.id, row.recording_url) == (CALL_SID, RECORDING_URL)


async def _scenario(fake, sock, public, store, recordings, tmp_path):  # type: ignore[no-untyped-def]
    async with fake:
        s = settings(tmp_path, AGENTS, TWILIO_API_BASE_URL=fake.base_url, PUBLIC_URL=public)
        ctx = context(s, ReplyLlm([]))
        ctx.store = store
        async with store.db.tx() as conn:
            await open_call(conn, store.db, call_id=CALL_SID, now=1.0)
        app = Starlette(routes=callcentre.routes(ctx))
        async with serve(app, sock) as base:
            sink = EchoSink()
            runner = ctx.new_runner(inbound(), sink)
            sink.runner = runner
            features = ctx.callcentre.live[CALL_SID]
            task = asyncio.create_task(ctx.run_call(inbound(), sink, runner))
            try:
                await wait_for(lambda: features.recording_sid is not None)
                await wait_for(lambda: len(runner.transcript) >= 1)
            finally:
                runner.shutdown("test over")
                await asyncio.wait_for(task, 15)

            # Consent first: the announcement opens the greeting.
            assert runner.transcript[0].text == "This call is recorded. Hello, how can I help?"
            (form,) = recordings
            assert form["RecordingStatusCallback"] == [f"{public}/twilio/recording"]
            assert form["RecordingStatusCallbackMethod"] == ["POST"]
            assert sorted(form["RecordingStatusCallbackEvent"]) == ["absent", "completed"]
            assert form["RecordingChannels"] == ["mono"]

            # Twilio's side: the signed recording-status callback.
            url = form["RecordingStatusCallback"][0]
            params = {
                "AccountSid": ACCOUNT,
                "CallSid": CALL_SID,
                "RecordingSid": "RE" + "1" * 32,
                "RecordingUrl": RECORDING_URL,
                "RecordingStatus": "completed",
                "RecordingDuration": "42",
                "RecordingChannels": "1",
                "RecordingSource": "StartCallRecordingAPI",
            }
            async with httpx.AsyncClient(trust_env=False) as http:
                forged = await http.post(
                    url, data={**params, "RecordingUrl": "https://evil.example/x"},
                    headers={"X-Twilio-Signature": fake.validator.compute_signature(url, params)},
                )  # fmt: skip
                assert forged.status_code == 403
                unsigned = await http.post(url, data=params)
                assert unsigned.status_code == 403
                async with store.db.engine.connect() as conn:
                    row = (await conn.execute(sa.select(calls.c.recording_url))).one()
                assert row.recording_url is None
                signature = fake.validator.compute_signature(url, params)
                ok = await http.post(url, data=params, headers={"X-Twilio-Signature": signature})
                assert ok.status_code == 204
            assert base == public
