"""A local, wire-compatible stand-in for Twilio's Calls REST API, which also plays Twilio's side.

A real HTTP server on 127.0.0.1 (uvicorn + Starlette) that the real ``twilio`` REST client talks
to after ``client.api.base_url = fake.base_url``:

- ``POST /2010-04-01/Accounts/{sid}/Calls.json`` (form-encoded, Basic auth) -> 201 JSON call;
- ``GET``/``POST /2010-04-01/Accounts/{sid}/Calls/{CallSid}.json`` -> fetch / update (TwiML,
  ``Status=completed``).

After creating a call it sends what Twilio would: signed status callbacks (``initiated``,
``ringing``, ``in-progress``, then ``completed``/``busy``/``no-answer``/``failed``) with
``SequenceNumber``, and the asynchronous AMD callback. ``order="reversed"`` sends the status
callbacks last-first, ``duplicate=True`` sends each twice. ``throttle(n)`` answers the next
``n`` creates with HTTP 429 / code 20429. Every accepted create is timestamped (``creates``) for
calls-per-second checks.

Extensible: ``add_route(path, endpoint, methods)`` mounts more Twilio resources (e.g.
IncomingPhoneNumbers) on the same server, and ``check_auth(request)`` is available to them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from tests.fakes.asgi import LoopbackServer

# Scripts a created call can follow. "hold" answers (human) and stays in progress until the
# test ends it (``complete``) or our side updates it.
SCRIPTS = ("human", "machine", "fax", "unknown", "busy", "no-answer", "failed", "hold")

Behaviour = Callable[[str, int], str]  # (to, attempt number for this To, from 1) -> script


def bind_local() -> socket.socket:
    """A listening-ready socket on 127.0.0.1 and an unused port (know the URL before serving)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serve(app: Any, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Run an ASGI app on 127.0.0.1 on an unused port (or on ``sock``, from ``bind_local``),
    in this event loop. Yields its base URL."""
    async with LoopbackServer(app, sock=sock or bind_local()) as srv:
        yield srv.url


@dataclass(slots=True)
class CreateRecord:
    at: float  # when the request arrived (``FakeTwilio.clock``)
    sid: str
    to: str
    params: dict[str, list[str]]


@dataclass(slots=True)
class FakeCall:
    sid: str
    to: str
    from_: str
    script: str
    params: dict[str, list[str]]
    status: str = "queued"
    answered_by: str | None = None
    duration: int | None = None
    updates: list[dict[str, str]] = field(default_factory=list)
    updated: asyncio.Event = field(default_factory=asyncio.Event)
    answer_responses: list[tuple[int, str]] = field(default_factory=list)

    def one(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[0] if values else None


@dataclass(slots=True)
class Callback:
    url: str
    params: dict[str, str]
    status_code: int | None


class FakeTwilio:
    def __init__(
        self,
        account_sid: str = "AC" + "0" * 32,
        auth_token: str = "fake-auth-token-0123456789",
        *,
        behaviour: Behaviour | None = None,
        order: str = "in-order",
        duplicate: bool = False,
        talk_s: int = 7,
        step_s: float = 0.0,
        fetch_answer: bool = False,
        machine_wait_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.behaviour = behaviour or (lambda to, n: "human")
        self.order = order
        self.duplicate = duplicate
        self.talk_s = talk_s
        self.step_s = step_s
        self.fetch_answer = fetch_answer
        self.machine_wait_s = machine_wait_s
        self.clock = clock  # stamps ``creates``; a test's fake clock makes them virtual
        self.validator = RequestValidator(auth_token)
        self.calls: dict[str, FakeCall] = {}
        self.creates: list[CreateRecord] = []
        self.throttled: list[float] = []  # arrival times of creates refused with 429
        self.callbacks: list[Callback] = []
        self.attempts_by_to: dict[str, int] = {}
        self.geo_blocked: set[str] = set()  # numbers refused with 21215
        self.drop_callbacks = False  # lose every callback (recorded in ``dropped``)
        self.dropped: list[Callback] = []
        # While set to an unset Event, create requests wait for it (Twilio slow to answer);
        # ``held_creates`` counts those that arrived.
        self.hold_creates: asyncio.Event | None = None
        self.held_creates = 0
        self._throttle_next = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self._server: contextlib.AbstractAsyncContextManager[str] | None = None
        self.base_url = ""
        prefix = "/2010-04-01/Accounts/{account}"
        self.routes: list[Route] = [
            Route(prefix + "/Calls.json", self._create, methods=["POST"]),
            Route(prefix + "/Calls/{sid}.json", self._call, methods=["GET", "POST"]),
        ]

    # ----------------------------------------------------------------- lifecycle

    def add_route(self, path: str, endpoint: Callable[..., Any], methods: list[str]) -> None:
        """Mount another resource (before ``start``)."""
        self.routes.append(Route(path, endpoint, methods=methods))

    async def __aenter__(self) -> FakeTwilio:
        self._http = httpx.AsyncClient(timeout=10, trust_env=False)
        self._server = serve(Starlette(routes=self.routes))
        self.base_url = await self._server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.__aexit__(None, None, None)
        if self._http is not None:
            await self._http.aclose()

    async def wait_idle(self, wait_s: float = 20.0) -> None:
        """Wait until every scripted call has sent all its callbacks."""
        deadline = time.monotonic() + wait_s
        while self._tasks:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self._tasks)} call scripts still running")
            await asyncio.sleep(0.01)

    # ----------------------------------------------------------------- test controls

    def throttle(self, n: int) -> None:
        """Refuse the next ``n`` creates with HTTP 429 / code 20429."""
        self._throttle_next += n

    def complete(self, sid: str) -> None:
        """End a ``hold`` call (the callee hangs up)."""
        call = self.calls[sid]
        call.updates.append({"Status": "completed", "by": "callee"})
        call.updated.set()

    def check_auth(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        account = request.path_params.get("account", self.account_sid)
        return (
            request.headers.get("authorization") == f"Basic {expected}"
            and account == self.account_sid
        )

    # ----------------------------------------------------------------- REST

    async def _create(self, request: Request) -> Response:
        if not self.check_auth(request):
            return _error(401, 20003, "Authenticate")
        arrived = self.clock()
        if self.hold_creates is not None:
            self.held_creates += 1
            await self.hold_creates.wait()
        if self._throttle_next > 0:
            self._throttle_next -= 1
            self.throttled.append(arrived)
            return _error(429, 20429, "Too Many Requests")
        params: dict[str, list[str]] = {}
        for key, value in await _form(request):
            params.setdefault(key, []).append(value)
        to, from_ = params.get("To", [""])[0], params.get("From", [""])[0]
        if not to.startswith("+") or not to[1:].isdigit():
            return _error(400, 21211, "Invalid 'To' Phone Number")
        if not from_ or not ("Url" in params or "Twiml" in params):
            return _error(400, 21205, "Url or Twiml and From are required")
        if to in self.geo_blocked:
            return _error(400, 21215, "Geo permission configuration is not permitting call")
        n = self.attempts_by_to[to] = self.attempts_by_to.get(to, 0) + 1
        script = self.behaviour(to, n)
        if script not in SCRIPTS:
            raise ValueError(f"unknown script {script!r}")
        sid = "CA" + secrets.token_hex(16)
        call = FakeCall(sid=sid, to=to, from_=from_, script=script, params=params)
        self.calls[sid] = call
        self.creates.append(CreateRecord(at=arrived, sid=sid, to=to, params=params))
        task = asyncio.create_task(self._play(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return JSONResponse(self._json(call), status_code=201)

    async def _call(self, request: Request) -> Response:
        if not self.check_auth(request):
            return _error(401, 20003, "Authenticate")
        call = self.calls.get(request.path_params["sid"])
        if call is None:
            return _error(404, 20404, "The requested resource was not found")
        if request.method == "POST":
            update = dict(await _form(request))
            call.updates.append(update)
            call.updated.set()
        return JSONResponse(self._json(call))

    def _json(self, call: FakeCall) -> dict[str, Any]:
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call.sid}.json"
        return {
            "sid": call.sid,
            "account_sid": self.account_sid,
            "to": call.to,
            "to_formatted": call.to,
            "from": call.from_,
            "from_formatted": call.from_,
            "status": call.status,
            "direction": "outbound-api",
            "answered_by": call.answered_by,
            "duration": None if call.duration is None else str(call.duration),
            "api_version": "2010-04-01",
            "price": None,
            "price_unit": "USD",
            "date_created": None,
            "date_updated": None,
            "start_time": None,
            "end_time": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "caller_name": None,
            "forwarded_from": None,
            "group_sid": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": uri,
            "subresource_uris": {},
        }

    # ----------------------------------------------------------------- Twilio's side

    async def _play(self, call: FakeCall) -> None:
        script = call.script
        if script in ("busy", "no-answer"):
            steps = ["initiated", "ringing", script]
        elif script == "failed":
            steps = ["initiated", "failed"]
        else:
            steps = ["initiated", "ringing", "in-progress"]
        answered = steps[-1] == "in-progress"
        if self.order == "reversed":
            # Everything is known up front: the final status goes out first.
            if answered:
                await self._wait_end(call)
                steps.append("completed")
            call.status = steps[-1]
            for seq in reversed(range(len(steps))):
                await self._status(call, steps[seq], seq)
            return
        for seq, status in enumerate(steps):
            call.status = status
            await self._status(call, status, seq)
            await asyncio.sleep(self.step_s)
        if not answered:
            call.duration = 0
            return
        if self.fetch_answer:
            await self._answer(call)
        await self._wait_end(call)
        call.status = "completed"
        await self._status(call, "completed", len(steps))

    async def _wait_end(self, call: FakeCall) -> None:
        answered_by = {
            "human": "human",
            "hold": "human",
            "machine": "machine_end_beep",
            "fax": "fax",
            "unknown": "unknown",
        }[call.script]
        call.answered_by = answered_by
        await self._amd(call)
        if call.script == "hold" or (call.script != "human" and self.machine_wait_s):
            # A machine, fax or unknown call ends when our side updates it (voicemail TwiML
            # or hang-up) or after ``machine_wait_s``; a held call when the test ends it.
            timeout = None if call.script == "hold" else self.machine_wait_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.updated.wait(), timeout)
        call.duration = self.talk_s

    async def _status(self, call: FakeCall, status: str, seq: int) -> None:
        url = call.one("StatusCallback")
        events = set(call.params.get("StatusCallbackEvent", []))
        wanted = {"in-progress": "answered"}.get(status, status)
        final = status in ("completed", "busy", "no-answer", "failed", "canceled")
        if not url or not (final or wanted in events):
            return
        params = {
            "AccountSid": self.account_sid,
            "CallSid": call.sid,
            "CallStatus": status,
            "Direction": "outbound-api",
            "From": call.from_,
            "To": call.to,
            "ApiVersion": "2010-04-01",
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(seq),
            "Timestamp": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
        }
        if final:
            params["CallDuration"] = str(call.duration or 0)
            params["Duration"] = str(-(-(call.duration or 0) // 60))
        for _ in range(2 if self.duplicate else 1):
            await self._post(url, params)

    async def _amd(self, call: FakeCall) -> None:
        url = call.one("AsyncAmdStatusCallback")
        if not url or call.one("AsyncAmd") != "true":
            return
        params = {
            "AccountSid": self.account_sid,
            "CallSid": call.sid,
            "AnsweredBy": call.answered_by or "unknown",
            "MachineDetectionDuration": "2400",
        }
        for _ in range(2 if self.duplicate else 1):
            await self._post(url, params)

    async def _answer(self, call: FakeCall) -> None:
        url = call.one("Url")
        if not url:
            return
        params = {
            "AccountSid": self.account_sid,
            "CallSid": call.sid,
            "CallStatus": "in-progress",
            "Direction": "outbound-api",
            "From": call.from_,
            "To": call.to,
            "ApiVersion": "2010-04-01",
        }
        response = await self._post(url, params)
        if response is not None:
            call.answer_responses.append((response.status_code, response.text))

    async def _post(self, url: str, params: dict[str, str]) -> httpx.Response | None:
        assert self._http is not None
        if self.drop_callbacks:
            self.dropped.append(Callback(url, params, None))
            return None
        signature = self.validator.compute_signature(url, params)
        try:
            response = await self._http.post(
                url, data=params, headers={"X-Twilio-Signature": signature}
            )
        except httpx.HTTPError:
            self.callbacks.append(Callback(url, params, None))
            return None
        self.callbacks.append(Callback(url, params, response.status_code))
        return response


async def _form(request: Request) -> list[tuple[str, str]]:
    return parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message, "more_info": "", "status": status},
        status_code=status,
    )
