"""``POST /twilio/recording``: Twilio's signed recording-status callback.

When a recording is completed its URL goes onto the call record. The request is checked like
every Twilio webhook (``X-Twilio-Signature`` over the public URL and every form field); without
``TWILIO_AUTH_TOKEN`` only direct loopback peers are served.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from app.logs import bind_call, event, get_logger
from app.store.calls import set_recording_url
from app.transports.twilio_auth import TwilioAuth

if TYPE_CHECKING:
    from app.runtime.context import AppContext


log = get_logger(__name__)

MAX_BODY = 16 * 1024
_CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")


class RecordingCallback:
    def __init__(self, ctx: AppContext, clock: Any = time.time) -> None:
        self.ctx = ctx
        self.auth = TwilioAuth(ctx.settings)
        self.clock = clock
        self.urls: dict[str, str] = {}  # call id -> recording URL, also without a store

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return Response(status_code=413)
        try:
            params = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            return Response(status_code=400)
        fields = dict(params)
        call_sid = fields.get("CallSid", "")
        with bind_call(call_sid if _CALL_SID.match(call_sid) else None):
            refusal = self._refusal(request, params)
            if refusal:
                event(log, "recording_callback_rejected", logging.WARNING, reason=refusal)
                return Response(status_code=403)
            if not _CALL_SID.match(call_sid):
                event(log, "recording_callback_rejected", logging.WARNING, reason="bad CallSid")
                return Response(status_code=400)
            status = fields.get("RecordingStatus", "")
            event(log, "recording_status", status=status,
                  recording_sid=fields.get("RecordingSid", "")[:40],
                  duration_s=fields.get("RecordingDuration", ""))  # fmt: skip
            url = fields.get("RecordingUrl", "")
            if status == "completed" and url.startswith("https://"):
                self.urls[call_sid] = url
                if not await self._store(call_sid, url):
                    return Response(status_code=503)  # Twilio retries; the URL is not lost
            return Response(status_code=204)

    def _refusal(self, request: Request, params: list[tuple[str, str]]) -> str:
        return self.auth.refusal(request, self.auth.url(request), params)

    async def _store(self, call_sid: str, url: str) -> bool:
        store = self.ctx.store
        if store is None:
            return True
        try:
            async with store.db.tx() as conn:
                found = await set_recording_url(conn, call_sid, url, self.clock())
        except Exception as exc:
            event(log, "recording_url_unsaved", logging.ERROR, error=type(exc).__name__)
            return False
        if not found:
            event(log, "recording_url_unsaved", logging.WARNING, reason="no call row")
        return True
