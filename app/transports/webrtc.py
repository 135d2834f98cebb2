"""WebRTC transport: browser and app callers reach the same agent core as phone callers.

Routes (``routes(ctx)``):
  ``GET /`` (+ ``/call.js``, ``/call.css``)  the call page;
  ``POST /webrtc/session``  a short-lived, single-use session token and the ICE servers;
  ``POST /webrtc/offer``    ``{sdp, type: "offer", token}`` -> the SDP answer, ICE gathered.

Each accepted offer becomes a ``WebCall``: one aiortc peer connection, the agent's outbound
track (``AgentAudioTrack``, which is also the call's ``AudioSink``), a pump feeding the caller's
audio to the runner, and a "captions" data channel carrying both sides' transcript lines. The
call starts when media connects, so the greeting is not played into a half-open connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import deque
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from app.config import WebRtcSettings
from app.core.audio import CANONICAL, AudioFormat
from app.core.providers import CallInfo
from app.core.records import CallEnded, TranscriptLine
from app.logs import bind_call, event, get_logger, register_secret
from app.runtime import workers
from app.runtime.context import AppContext
from app.store.shared import spend_token
from app.transports.admission import admission
from app.transports.peers import bearer_ok, client_address
from app.transports.webrtc_audio import AgentAudioTrack, CallerAudioAdapter
from app.transports.webrtc_signal import (
    RateLimiter,
    SessionTokens,
    SignallingError,
    ice_servers,
    parse_offer,
)
from telephony.security import is_loopback

log = get_logger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
# The agent speaks 16 kHz PCM (the core's canonical format, what the local STT takes too);
# aiortc's Opus encoder resamples it to 48 kHz itself.
SINK_FORMAT: AudioFormat = CANONICAL
HANGUP_GRACE_S = 0.3  # let the browser's jitter buffer play the last words before closing
DTMF_DIGITS = set("0123456789*#")


class WebCall:
    """One browser caller: peer connection, tracks, captions, and the task that runs it."""

    def __init__(self, ctx: AppContext, call: CallInfo, pc: RTCPeerConnection) -> None:
        self.ctx = ctx
        self.call = call
        self.pc = pc
        self.track = AgentAudioTrack(SINK_FORMAT, self._mark_reached)
        self.format = SINK_FORMAT
        self.runner: Any = None  # made when media connects (needs a live call slot)
        self.connected = asyncio.Event()
        self.gone = asyncio.Event()  # media failed or the peer closed
        self.remote_audio: asyncio.Future[MediaStreamTrack] = (
            asyncio.get_running_loop().create_future()
        )
        self.channel: Any = None
        self._pending_captions: deque[str] = deque(maxlen=64)
        self.frames_in = 0
        self._closed = False
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_state)

    # ------------------------------------------------------------------ AudioSink

    async def send_audio(self, chunk: Any) -> None:
        await self.track.send_audio(chunk)

    async def send_mark(self, name: str) -> None:
        await self.track.send_mark(name)

    async def clear(self) -> None:
        await self.track.clear()

    async def hangup(self, reason: str) -> None:
        event(log, "webrtc_hangup", reason=reason)
        self._send({"type": "hangup", "reason": reason})
        await asyncio.sleep(HANGUP_GRACE_S)
        await self.close()

    # ------------------------------------------------------------------ aiortc events

    def _mark_reached(self, name: str) -> None:
        if self.runner is not None and not self.runner.ended:
            self.runner.mark_reached(name)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and not self.remote_audio.done():
            self.remote_audio.set_result(track)

    def _on_datachannel(self, channel: Any) -> None:
        if channel.label != "captions":
            return
        self.channel = channel
        channel.on("message", self._on_message)
        channel.on("open", self._flush_captions)
        if channel.readyState == "open":
            self._flush_captions()

    def _on_message(self, message: Any) -> None:
        try:
            msg = json.loads(message) if isinstance(message, str) else None
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            event(log, "webrtc_bad_message", kind=type(message).__name__)
            return
        kind = msg.get("type")
        if kind == "hangup":
            self.gone.set()  # the watcher tells the runner, or the call never starts
        elif kind == "dtmf" and msg.get("digit") in DTMF_DIGITS and self.runner is not None:
            self.runner.dtmf(msg["digit"])
        else:
            event(log, "webrtc_bad_message", kind=str(kind)[:20])

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        event(log, "webrtc_connection_state", state=state)
        if state == "connected":
            self.connected.set()
        elif state in ("failed", "closed"):
            self.gone.set()

    # ------------------------------------------------------------------ captions

    def caption(self, record: Any) -> None:
        """Called by the captions observer with this call's records (never blocks)."""
        if isinstance(record, TranscriptLine):
            msg = {
                "type": "caption",
                "role": record.role,
                "text": record.text,
                "interrupted": record.interrupted,
                "turn": record.turn,
            }
        elif isinstance(record, CallEnded):
            msg = {"type": "ended", "reason": record.reason}
        else:
            return
        self._send(msg)

    def _send(self, msg: dict[str, Any]) -> None:
        self._pending_captions.append(json.dumps(msg))
        self._flush_captions()

    def _flush_captions(self) -> None:
        channel = self.channel
        while channel is not None and channel.readyState == "open" and self._pending_captions:
            channel.send(self._pending_captions.popleft())

    # ------------------------------------------------------------------ lifecycle

    async def main(self, connect_timeout_s: float) -> None:
        """Wait for media, run the call to its end, then tear everything down."""
        try:
            waits = [asyncio.ensure_future(e.wait()) for e in (self.connected, self.gone)]
            try:
                await asyncio.wait(
                    waits, timeout=connect_timeout_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiting in waits:
                    waiting.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
            if not self.connected.is_set():
                event(log, "webrtc_connect_timeout", timeout_s=connect_timeout_s)
                return
            if self.gone.is_set():
                return
            event(log, "webrtc_call_connected")
            self.runner = self.ctx.new_runner(self.call, self)
            pump = asyncio.create_task(self._pump_caller_audio())
            watch = asyncio.create_task(self._watch_peer())
            try:
                await self.ctx.run_call(self.call, self, self.runner)
            finally:
                for task in (pump, watch):
                    task.cancel()
                await asyncio.gather(pump, watch, return_exceptions=True)
        except Exception:
            log.exception("webrtc_call_failed")
        finally:
            await self.close()
            event(
                log,
                "webrtc_call_closed",
                frames_in=self.frames_in,
                frames_out=self.track.frames_sent,
                audible_out=self.track.audible_frames,
            )

    async def _watch_peer(self) -> None:
        await self.gone.wait()
        if not self._closed:  # our own hang-up closes the peer too; nothing to report then
            self.runner.remote_hangup("caller hung up")

    async def _pump_caller_audio(self) -> None:
        track = await self.remote_audio
        adapter = CallerAudioAdapter(SINK_FORMAT)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                self.gone.set()
                return
            self.frames_in += 1
            try:
                chunk = adapter.convert(frame)
            except ValueError as exc:  # a codec we did not expect: end this call, not others
                event(log, "webrtc_bad_caller_audio", error=str(exc)[:120])
                self.runner.remote_hangup("caller audio unreadable")
                return
            if chunk.data:
                await self.runner.caller_audio(chunk)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.track.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()


class CaptionsObserver:
    """Routes every web call's records to its data channel (``CallObserver``)."""

    def __init__(self, manager: WebRtcManager) -> None:
        self.manager = manager

    def record(self, call: CallInfo, record: Any) -> None:
        if call.transport != "webrtc":
            return
        web_call = self.manager.calls.get(call.call_id)
        if web_call is not None:
            web_call.caption(record)


class WebRtcManager:
    """Signalling state of this process and owner of every web call's task."""

    def __init__(self, ctx: AppContext, settings: WebRtcSettings) -> None:
        self.ctx = ctx
        self.settings = settings
        # Any worker of this machine verifies a token another issued: without a configured
        # secret they share the one their parent gave them.
        secret = settings.token_secret or workers.current().secret or secrets.token_hex(32)
        for value in (secret, settings.turn_secret, settings.turn_credential):
            register_secret(value)
        self.tokens = SessionTokens(secret.encode(), settings.token_ttl_s)
        self.limiter = RateLimiter(settings.offers_per_minute)
        self.calls: dict[str, WebCall] = {}
        self.admission = admission(ctx)
        self._tasks: set[asyncio.Task[None]] = set()
        self._today: tuple[float, int] = (0.0, 0)  # (UTC day, web calls) without a store

    # ------------------------------------------------------------------ HTTP

    async def session(self, request: Request) -> Response:
        try:
            self._check_access(request)
            self._check_rate(request)
            self._check_capacity()
            await self._check_daily_cap()
            now = time.time()
            sid, token = self.tokens.issue(now)
            body = {
                "token": token,
                "expires_in": self.settings.token_ttl_s,
                "ice_servers": ice_servers(self.settings, sid, now),
            }
            return JSONResponse(body, headers={"Cache-Control": "no-store"})
        except SignallingError as err:
            return self._refuse(err)

    async def offer(self, request: Request) -> Response:
        try:
            self._check_rate(request)
            try:
                body = await request.json()
            except ValueError:
                raise SignallingError(400, "bad_request", "body must be JSON") from None
            offer = parse_offer(body)
            now = time.time()
            sid = self.tokens.redeem(offer.token, now)
            await self._spend(sid, offer.token, now)
            self._check_capacity()
            await self._check_daily_cap()
            call_id = f"web-{sid}"
            if not await self.admission.reserve(call_id):
                raise SignallingError(503, "busy", "all lines are busy; please try again later")
        except SignallingError as err:
            return self._refuse(err)
        with bind_call(call_id):
            return await self._answer(call_id, offer.sdp, offer.audio_codecs)

    async def _answer(self, call_id: str, sdp: str, codecs: tuple[str, ...]) -> Response:
        servers = [RTCIceServer(**s) for s in ice_servers(self.settings, call_id, time.time())]
        # An explicit (possibly empty) list: with none, aiortc would use a public STUN server.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        call = CallInfo(call_id=call_id, transport="webrtc")
        web_call: WebCall | None = None
        try:
            web_call = WebCall(self.ctx, call, pc)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            pc.addTrack(web_call.track)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc refuses an offer with anything from ValueError up
            if web_call is not None:
                await web_call.close()
            else:
                await pc.close()
            await self.admission.ended(call_id)
            event(log, "webrtc_offer_refused", reason=type(exc).__name__, status=400)
            return JSONResponse(
                {"error": "bad_sdp", "message": f"cannot answer this offer ({type(exc).__name__})"},
                status_code=400,
            )
        self.calls[call_id] = web_call
        self._count_today()
        task = asyncio.create_task(self._run(web_call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        event(log, "webrtc_offer_answered", codecs=",".join(codecs), web_calls=len(self.calls))
        answer = pc.localDescription
        return JSONResponse({"sdp": answer.sdp, "type": answer.type, "call_id": call_id})

    async def _run(self, web_call: WebCall) -> None:
        try:
            await web_call.main(self.settings.connect_timeout_s)
        finally:
            self.calls.pop(web_call.call.call_id, None)
            await self.admission.ended(web_call.call.call_id)

    async def _spend(self, sid: str, token: str, now: float) -> None:
        """A token is single-use across every worker and instance: the store remembers it."""
        store = self.ctx.store
        if store is None:
            return  # this worker's memory (``redeem``) is all there is
        try:
            fresh = await spend_token(
                store.db, sid, expires_at=SessionTokens.expiry(token), now=now
            )
        except Exception as exc:  # the store is down: refuse rather than risk a replay
            event(log, "webrtc_token_store_failed", error=type(exc).__name__)
            raise SignallingError(503, "busy", "please try again later") from None
        if not fresh:
            raise SignallingError(401, "used_token", "session token already used")

    def _check_access(self, request: Request) -> None:
        """Public web calls, or only for the operator: the API token, or a loopback peer."""
        if self.settings.public:
            return
        token = self.ctx.settings.ops.api_token
        if token and bearer_ok(request, token):
            return
        if is_loopback(request.client.host if request.client else None, request.headers):
            return
        raise SignallingError(
            401, "not_public", "web calls on this server need an access link from its operator"
        )

    async def _check_daily_cap(self) -> None:
        cap = self.settings.daily_cap
        if not cap:
            return
        midnight = time.time() // 86_400 * 86_400  # UTC day
        store = self.ctx.store
        if store is not None:
            try:
                used = await store.calls.count_since("webrtc", midnight)
            except Exception as exc:  # the store is down: refuse rather than overspend
                event(log, "webrtc_cap_unknown", error=type(exc).__name__)
                raise SignallingError(503, "busy", "please try again later") from None
        else:
            used = self._used_here(midnight)
        if used >= cap:
            raise SignallingError(
                503, "daily_cap", "web calls are closed for today; please try again tomorrow"
            )

    def _used_here(self, midnight: float) -> int:
        day, used = self._today
        return used if day == midnight else 0

    def _count_today(self) -> None:
        midnight = time.time() // 86_400 * 86_400
        self._today = (midnight, self._used_here(midnight) + 1)

    def _check_rate(self, request: Request) -> None:
        ip = client_address(request, self.ctx.settings.server) or "unknown"
        if not self.limiter.allow(ip, time.monotonic()):
            err = SignallingError(429, "rate_limited", "too many call attempts; try again soon")
            err.retry_after = self.limiter.retry_after(ip)  # type: ignore[attr-defined]
            raise err

    def _check_capacity(self) -> None:
        if self.ctx.calls.draining:
            raise SignallingError(503, "draining", "the server is restarting; call again shortly")
        # With a store, the machine's slots decide at the offer (``admission.reserve``): this
        # worker being at its own cap does not make the machine busy.
        full_here = self.ctx.store is None and not self.ctx.calls.can_admit()
        if len(self.calls) >= self.settings.max_calls or full_here:
            raise SignallingError(503, "busy", "all lines are busy; please try again later")

    def _refuse(self, err: SignallingError) -> JSONResponse:
        event(log, "webrtc_request_refused", code=err.code, status=err.status)
        headers = {}
        retry = getattr(err, "retry_after", None)
        if retry is not None:
            headers["Retry-After"] = str(retry)
        elif err.status == 503:
            headers["Retry-After"] = "10"
        body = {"error": err.code, "message": err.message}
        return JSONResponse(body, status_code=err.status, headers=headers)

    async def aclose(self) -> None:
        """Hang up every web call and wait for their tasks (server shutdown)."""
        for web_call in list(self.calls.values()):
            if web_call.runner is not None:
                web_call.runner.remote_hangup("server shutting down")
            await web_call.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _page(name: str, media_type: str) -> Any:
    async def serve(request: Request) -> Response:
        return FileResponse(
            WEB_DIR / name, media_type=media_type, headers={"Cache-Control": "no-cache"}
        )

    return serve


def routes(ctx: AppContext) -> list[BaseRoute]:
    manager = WebRtcManager(ctx, ctx.settings.webrtc)
    ctx.webrtc = manager
    ctx.observers.append(CaptionsObserver(manager))
    return [
        Route("/", _page("index.html", "text/html; charset=utf-8"), methods=["GET"]),
        Route("/call.js", _page("call.js", "text/javascript; charset=utf-8"), methods=["GET"]),
        Route("/call.css", _page("call.css", "text/css; charset=utf-8"), methods=["GET"]),
        Route("/webrtc/session", manager.session, methods=["POST"]),
        Route("/webrtc/offer", manager.offer, methods=["POST"]),
    ]


async def aclose(ctx: AppContext) -> None:
    """Server shutdown: close every web call still open (after the drain had its chance)."""
    manager = ctx.webrtc
    if isinstance(manager, WebRtcManager):
        await manager.aclose()
