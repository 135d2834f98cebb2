"""Twilio transport: the voice webhook and the Media Streams WebSocket.

``POST /twilio/voice`` checks Twilio's signature, admits the call and answers TwiML that opens
a bidirectional stream carrying a short-lived token bound to the CallSid. ``WS /twilio/media``
checks the upgrade's signature, runs ``telephony.media_stream`` over the socket, verifies the
token on ``start``, then runs the call's ``CallRunner`` in a task it owns and feeds it.
``TwilioSink`` (``twilio_sink``) is the runner's way back: audio, marks, clear and hang-up.

Without ``TWILIO_AUTH_TOKEN`` nothing can be verified, so both routes serve direct loopback
peers only (local tests and the simulator) and answer everyone else 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from app.core.audio import MULAW_8K, AudioChunk
from app.core.providers import CallInfo
from app.logs import bind_call, call_id_var, event, get_logger, mask_phone, register_secret
from app.runtime.context import AppContext
from app.runtime.workers import token_key
from app.transports.admission import RESERVATION_S, admission
from app.transports.twilio_auth import TwilioAuth
from app.transports.twilio_resume import Continuity, action_url
from app.transports.twilio_sink import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    TwilioSink,
)
from telephony import paths
from telephony.media_stream import (
    Dtmf,
    Mark,
    Media,
    MediaStream,
    ProtocolError,
    Start,
    Stop,
)
from telephony.security import StreamTokens, TokenCheck, stream_parameters
from telephony.security import stream_url as ws_url_for
from twiml.voice import connect_stream, reject_busy

log = get_logger(__name__)

VOICE_PATH, MEDIA_PATH = paths.VOICE, paths.MEDIA
# The number's "primary handler fails" URL: Twilio asks it when /twilio/voice errs or times out.
FALLBACK_PATH = paths.FALLBACK
FALLBACK_MESSAGE = "Sorry, we cannot take your call right now. Please try again in a few minutes."
MAX_WEBHOOK_BYTES = 64 * 1024  # Twilio's voice webhook is a few hundred bytes of form fields
START_TIMEOUT_S = 10.0  # Twilio sends connected+start at once; a silent socket is not Twilio
FINISH_GRACE_S = 5.0  # after the stream ends, time the runner gets to write its records
HANDOVER_WAIT_S = 4.0  # on a deploy, the longest a call waits for a quiet moment to move
BUSY_MESSAGE = "Sorry, all of our lines are busy right now. Please call again in a few minutes."
_CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")


class TwilioEdge:
    """Both Twilio routes, sharing the signature checker and the stream-token key."""

    def __init__(self, ctx: AppContext, now: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        auth_token = ctx.settings.twilio.auth_token
        register_secret(auth_token)
        self.auth = TwilioAuth(ctx.settings)
        # Wall-clock time: tokens are checked by whichever instance receives the stream.
        # Without an auth token, the key the workers of this machine share.
        self.tokens = StreamTokens.from_auth_token(
            token_key(auth_token), ctx.settings.twilio.stream_token_ttl_s
        )
        self.now = now
        self.admission = admission(ctx)
        self.continuity = Continuity(ctx, self.tokens, now)

    def routes(self) -> list[BaseRoute]:
        return [
            Route(VOICE_PATH, self.voice, methods=["POST"]),
            Route(FALLBACK_PATH, self.fallback, methods=["POST"]),
            Route(paths.STREAM_ENDED, self.stream_ended, methods=["POST"]),
            WebSocketRoute(MEDIA_PATH, self.media),
        ]

    # ------------------------------------------------------------ webhook

    def _url(self, conn: HTTPConnection, websocket: bool = False) -> str:
        return self.auth.url(conn, websocket)

    def _refusal(self, conn: HTTPConnection, url: str, params: list[tuple[str, str]] | None) -> str:
        """Why this request may not proceed, or "" when it may."""
        return self.auth.refusal(conn, url, params)

    async def voice(self, request: Request) -> Response:
        body = await _read_body(request, MAX_WEBHOOK_BYTES)
        if body is None:
            event(log, "twilio_webhook_rejected", logging.WARNING, reason="body too large")
            return Response(status_code=413)
        try:
            params = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            event(log, "twilio_webhook_rejected", logging.WARNING, reason="undecodable body")
            return Response(status_code=400)
        fields = dict(params)
        call_sid = fields.get("CallSid", "")
        # The CallSid names the log lines even when the request is refused: it is what
        # Twilio's debugger shows for a call that got a 403 (e.g. a wrong PUBLIC_URL).
        token = call_id_var.set(call_sid if _CALL_SID.match(call_sid) else None)
        try:
            url = self._url(request)
            refusal = self._refusal(request, url, params)
            if refusal:
                event(log, "twilio_webhook_rejected", logging.WARNING, reason=refusal, url=url)
                return Response(status_code=403)
            if not _CALL_SID.match(call_sid):
                event(log, "twilio_webhook_rejected", logging.WARNING, reason="bad CallSid")
                return Response(status_code=400)
            direction, from_, to = fields.get("Direction"), fields.get("From"), fields.get("To")
            return await self._answer(_call_info(call_sid, direction, from_, to), url)
        finally:
            call_id_var.reset(token)

    async def _signed_form(
        self, request: Request, route: str
    ) -> tuple[dict[str, str], str] | Response:
        """A Twilio callback's form fields and the URL it signed, read within its bound and
        checked before anything is done with it; or the refusal to answer."""
        body = await _read_body(request, MAX_WEBHOOK_BYTES)
        try:
            params = parse_qsl((body or b"").decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            return Response(status_code=400)
        fields = dict(params)
        call_sid = fields.get("CallSid", "")
        with bind_call(call_sid if _CALL_SID.match(call_sid) else None):
            url = self._url(request)
            refusal = self._refusal(request, url, params)
            if body is None or refusal or not _CALL_SID.match(call_sid):
                event(log, "twilio_webhook_rejected", logging.WARNING, route=route,
                      reason=refusal or ("body too large" if body is None else "bad CallSid"))
                return Response(status_code=403 if refusal else 413 if body is None else 400)
        return fields, url

    async def fallback(self, request: Request) -> Response:
        """Twilio's fallback request after the voice webhook failed (it sends ``ErrorCode`` and
        ``ErrorUrl``): say sorry and pass the caller to ``OVERFLOW_NUMBER``, or hang up."""
        checked = await self._signed_form(request, "fallback")
        if isinstance(checked, Response):
            return checked
        fields, _ = checked
        with bind_call(fields["CallSid"]):
            event(log, "twilio_fallback", logging.ERROR,
                  error_code=fields.get("ErrorCode", "")[:10],
                  error_url=fields.get("ErrorUrl", "")[:200])  # fmt: skip
        return _xml(reject_busy(FALLBACK_MESSAGE, self.ctx.settings.ops.overflow_number))

    async def stream_ended(self, request: Request) -> Response:
        """Twilio's ``<Connect action>`` request: the stream of a call ended. Hang up a call
        that is over; connect a new stream to any other (``app.transports.twilio_resume``)."""
        checked = await self._signed_form(request, "stream-ended")
        if isinstance(checked, Response):
            return checked
        fields, url = checked
        with bind_call(fields["CallSid"]):
            ws_url = ws_url_for(url, MEDIA_PATH)
            return _xml(await self.continuity.after_stream(fields, url, ws_url))

    async def _answer(self, call: CallInfo, url: str) -> Response:
        caller, callee = mask_phone(call.from_number), mask_phone(call.to_number)
        ttl = min(float(self.ctx.settings.twilio.stream_token_ttl_s), RESERVATION_S)
        if not await self.admission.reserve(call.call_id, ttl):
            event(
                log,
                "twilio_call_busy",
                logging.WARNING,
                live_calls=len(self.ctx.calls),
                draining=self.ctx.calls.draining,
                caller=caller,
                callee=callee,
            )
            if (metrics := self.ctx.metrics) is not None:
                metrics.rejected("twilio", "draining" if self.ctx.calls.draining else "full")
            return _xml(reject_busy(BUSY_MESSAGE, self.ctx.settings.ops.overflow_number))
        parameters = stream_parameters(
            self.tokens, call.call_id, self.now(), direction=call.direction,
            from_number=call.from_number, to_number=call.to_number,
        )
        event(log, "twilio_call_answered", direction=call.direction, caller=caller, callee=callee)
        if (records := self.ctx.call_records) is not None:
            records.open_call(call)  # the call's record exists from the webhook on
        return _xml(
            connect_stream(ws_url_for(url, MEDIA_PATH), parameters, action=action_url(url))
        )

    # ------------------------------------------------------------ media stream

    async def media(self, websocket: WebSocket) -> None:
        refusal = self._refusal(websocket, self._url(websocket, websocket=True), None)
        if refusal:
            event(log, "twilio_stream_refused", logging.WARNING, reason=refusal)
            await websocket.close(code=CLOSE_POLICY)  # before accept: an HTTP 403
            return
        await websocket.accept()
        await _MediaSocket(self, websocket).run()


class _MediaSocket:
    """One accepted Media Streams socket: read frames, feed the runner, own its task."""

    def __init__(self, edge: TwilioEdge, websocket: WebSocket) -> None:
        self.edge = edge
        self.ctx = edge.ctx
        self.ws = websocket
        self.stream = MediaStream()
        self.sink = TwilioSink(websocket, self.stream)
        self.runner: Any = None
        self.task: asyncio.Task[None] | None = None
        self._handover: asyncio.Task[None] | None = None
        self.media_in = 0
        self.bytes_in = 0

    async def run(self) -> None:
        reason = "stream closed"
        call_token = None
        try:
            while True:
                timeout = START_TIMEOUT_S if self.runner is None else None
                try:
                    message = await asyncio.wait_for(self.ws.receive(), timeout)
                except TimeoutError:
                    raise ProtocolError(f"no start within {START_TIMEOUT_S:.0f} s") from None
                if message["type"] == "websocket.disconnect":
                    self.sink.mark_gone()
                    reason = "stream closed" if self.sink.close_reason is None else "call ended"
                    break
                if message.get("text") is not None:
                    ev = self.stream.receive(message["text"])
                else:
                    ev = self.stream.receive_bytes(message.get("bytes") or b"")
                if isinstance(ev, Start):
                    call_token = call_id_var.set(ev.call_sid)
                    if not await self._start(ev):
                        reason = "refused"
                        break
                elif isinstance(ev, Media):
                    self.media_in += 1
                    self.bytes_in += len(ev.payload)
                    if ev.payload and not self.runner.ended:
                        await self.runner.caller_audio(AudioChunk(ev.payload, MULAW_8K))
                elif isinstance(ev, Dtmf):
                    self.runner.dtmf(ev.digit)
                elif isinstance(ev, Mark):
                    self.runner.mark_reached(ev.name)
                elif isinstance(ev, Stop):
                    reason = "caller hung up"
                    break
        except ProtocolError as exc:
            reason = "protocol error"
            event(
                log,
                "twilio_stream_protocol_error",
                logging.WARNING,
                error=str(exc),
                state=self.stream.state.value,
            )
            await self.sink.close(CLOSE_PROTOCOL, "protocol error")
        except Exception:
            reason = "internal error"
            log.error("twilio_stream_failed", exc_info=True)
            await self.sink.close(CLOSE_INTERNAL, "internal error")
        finally:
            try:
                await self._finish(reason)
            finally:
                if call_token is not None:
                    call_id_var.reset(call_token)

    async def _start(self, start: Start) -> bool:
        params = start.custom_parameters
        check = self.edge.tokens.verify(params.get("token"), start.call_sid, self.edge.now())
        refusal = "" if check is TokenCheck.OK else f"token {check.value}"
        if not refusal and self.ctx.calls.get(start.call_sid) is not None:
            refusal = "call already has a stream"  # a replayed start for a live call
        if not refusal and self.ctx.calls.draining and self.ctx.settings.server.drain_handover:
            # handing calls over: Twilio's <Connect action> asks again and reaches another one
            refusal = "draining"
        if refusal:
            event(log, "twilio_stream_refused", logging.WARNING, reason=refusal)
            await self.sink.close(CLOSE_POLICY, "stream refused")
            return False
        resumed = None
        agent = params.get("agent")
        if params.get("resume"):
            refusal, resumed, row = await self.edge.continuity.restore(
                start.call_sid, params["resume"]
            )
            if refusal:
                event(log, "twilio_stream_refused", logging.WARNING, reason=refusal)
                await self.sink.close(CLOSE_POLICY, "stream refused")
                return False
            agent = agent or (row or {}).get("agent")
        call = _call_info(
            start.call_sid, params.get("direction"), params.get("from"), params.get("to")
        )
        call = await self._call_context(call, agent)
        self.runner = self.ctx.new_runner(call, self.sink, resumed)
        continuity = self.edge.continuity
        self.sink.before_hangup = lambda reason: continuity.ended_on_purpose(call.call_id, reason)
        event(log, "twilio_stream_started", stream_sid=start.stream_sid, tracks=list(start.tracks))
        self.task = asyncio.create_task(self._run_call(call), name=f"call-{call.call_id}")
        return True

    async def _call_context(self, call: CallInfo, agent: str | None) -> CallInfo:
        """Who the agent is for this call and what it knows: an explicit agent parameter, and
        for an outbound call we placed, its prompt, variables and campaign from the store."""
        variables: dict[str, str] = {}
        store = self.ctx.store
        if call.direction == "outbound" and store is not None:
            try:
                placed = await store.call_context(call.call_id)
            except Exception as exc:  # the call goes on with the default agent
                event(log, "call_context_failed", logging.WARNING, error=type(exc).__name__)
                placed = None
            if placed is not None:
                variables.update(placed.variables)
                if placed.prompt:
                    variables["instructions"] = placed.prompt
                if placed.campaign_id is not None:
                    variables["campaign_id"] = str(placed.campaign_id)
                agent = agent or placed.agent
        return dataclasses.replace(call, variables=variables, agent=agent or "default")

    async def _run_call(self, call: CallInfo) -> None:
        try:
            # Same step as run_call's registration: the slot moves from reserved to live.
            self.edge.admission.started(call.call_id)
            await self.ctx.run_call(call, self.sink, self.runner, handover=self.hand_over)
        finally:
            # However the call ended, end the stream too, so Twilio moves on.
            await self.sink.hangup("call ended")

    def hand_over(self) -> None:
        """A deploy: close this stream at the call's next quiet moment (the agent not
        speaking, or after ``HANDOVER_WAIT_S``), not as an end of the call: Twilio's
        ``<Connect action>`` request then reaches a healthy instance, which resumes it."""
        if self._handover is None:
            self._handover = asyncio.create_task(self._hand_over(), name="handover")

    async def _hand_over(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HANDOVER_WAIT_S):
                await self.runner.quiet.wait()
        event(log, "twilio_call_handed_over", quiet=self.runner.quiet.is_set())
        await self.sink.close(CLOSE_NORMAL, "handed over")

    async def _finish(self, reason: str) -> None:
        if self._handover is not None and not self._handover.done():
            self._handover.cancel()
            await asyncio.gather(self._handover, return_exceptions=True)
        task = self.task
        if task is not None:
            try:
                if not task.done():
                    self.runner.remote_hangup(reason)
                    await asyncio.wait({task}, timeout=FINISH_GRACE_S)
            finally:
                if not task.done():
                    event(log, "twilio_call_cancelled", logging.WARNING, grace_s=FINISH_GRACE_S)
                    task.cancel()
                (outcome,) = await asyncio.gather(task, return_exceptions=True)
            if isinstance(outcome, Exception):
                log.error("twilio_call_failed", exc_info=outcome)
        await self.sink.close(CLOSE_NORMAL, "stream ended")
        event(
            log,
            "twilio_stream_ended",
            reason=reason,
            media_frames_in=self.media_in,
            audio_bytes_in=self.bytes_in,
            frames_out=self.sink.frames_sent,
        )
        if self.runner is not None:  # last: the call's slot is free for the next caller
            await self.edge.admission.ended(self.runner.call.call_id)


def routes(ctx: AppContext) -> list[BaseRoute]:
    if not ctx.settings.twilio.auth_token:
        event(
            log,
            "twilio_signatures_disabled",
            logging.WARNING,
            detail="TWILIO_AUTH_TOKEN is not set: Twilio routes answer loopback peers only",
        )
    return TwilioEdge(ctx).routes()


def _call_info(call_sid: str, direction: str | None, from_: str | None, to: str | None) -> CallInfo:
    # Twilio says inbound, outbound-api or outbound-dial.
    outbound = (direction or "").startswith("outbound")
    return CallInfo(
        call_id=call_sid,
        transport="twilio",
        direction="outbound" if outbound else "inbound",
        from_number=from_ or None,
        to_number=to or None,
    )


def _xml(document: str) -> Response:
    return Response(document, media_type="application/xml")


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it exceeds ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            return None
    return bytes(body)
