"""``POST /twilio/status`` and ``POST /twilio/amd``: Twilio's callbacks about calls.

Both are signature-checked over the public URL Twilio requested (query included) and every
form field. They answer 204 once applied; 403 for a bad signature; 400 for a malformed body;
503 while the store is not up, and 500 on a database error, so that Twilio retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from app.logs import bind_call, event, get_logger
from app.transports.twilio_auth import TwilioAuth
from telephony import paths

if TYPE_CHECKING:
    from app.runtime.context import AppContext


log = get_logger(__name__)


def routes(ctx: AppContext) -> list[BaseRoute]:
    settings = ctx.settings
    auth = TwilioAuth(settings)

    async def _verified_form(request: Request, name: str) -> dict[str, str] | Response:
        try:  # form-encoded, as Twilio sends it
            items = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            items = []
        sid = dict(items).get("CallSid")
        refusal = auth.refusal(request, auth.url(request), items)
        if refusal:
            with bind_call(sid):
                event(
                    log,
                    "twilio_signature_rejected",
                    level=30,
                    route=name,
                    reason=refusal,
                    client=request.client.host if request.client else None,
                )
            return Response("invalid signature", status_code=403)
        return dict(items)

    async def _handle(request: Request, name: str) -> Response:
        service = ctx.outbound
        if service is None:
            return Response("not ready", status_code=503)
        form = await _verified_form(request, name)
        if isinstance(form, Response):
            return form
        query = dict(request.query_params)
        with bind_call(form.get("CallSid")):
            try:
                if name == "status":
                    await service.on_status(form, query)
                else:
                    await service.on_amd(form, query)
            except ValueError as exc:
                event(log, "twilio_callback_invalid", level=30, route=name, error=str(exc))
                return Response("bad request", status_code=400)
            except Exception as exc:
                event(log, "twilio_callback_failed", level=40, route=name, error=type(exc).__name__)
                return Response("try again", status_code=500)
        return Response(status_code=204)

    async def status(request: Request) -> Response:
        return await _handle(request, "status")

    async def amd(request: Request) -> Response:
        return await _handle(request, "amd")

    return [
        Route(paths.STATUS, status, methods=["POST"]),
        Route(paths.AMD, amd, methods=["POST"]),
    ]
