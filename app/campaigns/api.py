"""The campaign HTTP API, behind a bearer token (``API_TOKEN``).

    POST /api/campaigns                      create from CSV (JSON body, ``csv`` holds the text)
    GET  /api/campaigns                      list
    GET  /api/campaigns/{id}                 campaign and progress
    GET  /api/campaigns/{id}/contacts        contacts (?status=&limit=&offset=)
    POST /api/campaigns/{id}/{command}       run | pause | resume | cancel
    POST /api/dnc     DELETE /api/dnc/{phone}  the do-not-call list
    POST /api/dial                           one outbound call

Without the token (or when none is configured) every request is refused with 401 and logged.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from app.campaigns.manage import CampaignInputError, create_from_csv, error_summary
from app.logs import event, get_logger, mask_phone
from app.outbound.numbers import NumberRefused, normalise
from app.store.campaigns import TRANSITIONS, CampaignStateError

if TYPE_CHECKING:
    from app.runtime.context import AppContext


log = get_logger(__name__)

MAX_BODY = 20 * 1024 * 1024
CAMPAIGNS_PATH = "/api/campaigns"
MAX_ERRORS_SHOWN = 100


def routes(ctx: AppContext) -> list[BaseRoute]:
    settings = ctx.settings
    out = settings.outbound

    def refused(request: Request) -> Response | None:
        token = settings.ops.api_token
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if token and scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return None
        reason = "no API_TOKEN configured" if not token else (
            "missing token" if not header else "wrong token"
        )
        event(
            log, "api_unauthorized", level=30, path=request.url.path, method=request.method,
            reason=reason, client=request.client.host if request.client else None,
        )
        return JSONResponse(
            {"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )

    def store() -> Any:
        return ctx.store

    def now() -> float:
        service = ctx.outbound
        if service is not None:
            return service.clock.now()
        import time

        return time.time()

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise CampaignInputError("body too large")
        try:  # a 20 MB CSV in JSON takes ~100 ms to decode: off the event loop
            data = await asyncio.to_thread(json.loads, raw or b"{}") if len(raw) > 65_536 \
                else json.loads(raw or b"{}")
        except ValueError:
            raise CampaignInputError("body must be JSON") from None
        if not isinstance(data, dict):
            raise CampaignInputError("body must be a JSON object")
        return data

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            if (denied := refused(request)) is not None:
                return denied
            if store() is None:
                return JSONResponse({"error": "store not ready"}, status_code=503)
            try:
                return await handler(request)
            except CampaignInputError as exc:
                return JSONResponse({"error": str(exc)}, status_code=422)
            except CampaignStateError as exc:
                return JSONResponse({"error": str(exc)}, status_code=409)
            except KeyError:
                return JSONResponse({"error": "not found"}, status_code=404)

        return endpoint

    async def create(request: Request) -> Response:
        data = await body(request)
        csv_text = data.get("csv")
        if not isinstance(csv_text, str):
            raise CampaignInputError("csv (the file's text) is required")
        overrides = data.get("settings") or {}
        if not isinstance(overrides, dict):
            raise CampaignInputError("settings must be an object")
        campaign_id, parsed = await create_from_csv(
            store(),
            out,
            name=str(data.get("name") or "campaign"),
            csv_text=csv_text,
            now=now(),
            prompt=data.get("prompt"),
            agent=data.get("agent"),
            from_number=data.get("from_number"),
            overrides=overrides,
            allow_invalid=bool(data.get("allow_invalid", False)),
        )
        # The first rows in full, then the count: a 100,000-row mistake is not a 10 MB answer.
        errors = [{"line": e.line, "reason": e.reason} for e in parsed.errors[:MAX_ERRORS_SHOWN]]
        summary = error_summary(parsed.errors) if parsed.errors else {"rejected": 0}
        if campaign_id is None:
            return JSONResponse(
                {"error": "invalid rows", "errors": errors, "error_count": len(parsed.errors),
                 "reasons": summary.get("reasons", {})},
                status_code=422,
            )
        if data.get("start"):
            await store().campaigns.command(campaign_id, "run", now())
            _wake(ctx)
        return JSONResponse(
            {"id": campaign_id, "contacts": len(parsed.contacts), "errors": errors,
             "error_count": len(parsed.errors)},
            status_code=201,
        )

    async def list_campaigns(request: Request) -> Response:
        return JSONResponse({"campaigns": await store().campaigns.list()})

    async def show(request: Request) -> Response:
        campaign_id = request.path_params["id"]
        campaign = await store().campaigns.get(campaign_id)
        if campaign is None:
            raise KeyError(campaign_id)
        progress = await store().campaigns.progress(campaign_id)
        return JSONResponse({**campaign, "progress": progress})

    async def contacts(request: Request) -> Response:
        campaign_id = request.path_params["id"]
        if await store().campaigns.get(campaign_id) is None:
            raise KeyError(campaign_id)
        q = request.query_params
        try:
            limit, offset = int(q.get("limit", 100)), int(q.get("offset", 0))
        except ValueError:
            raise CampaignInputError("limit and offset must be whole numbers") from None
        rows = await store().campaigns.contacts(
            campaign_id, status=q.get("status"), limit=limit, offset=offset
        )
        return JSONResponse({"contacts": rows})

    async def command(request: Request) -> Response:
        campaign_id, name = request.path_params["id"], request.path_params["command"]
        if name not in TRANSITIONS:
            raise KeyError(name)
        status = await store().campaigns.command(campaign_id, name, now())
        event(log, "campaign_command", campaign_id=campaign_id, command=name, status=status)
        if status == "running":
            _wake(ctx)
        return JSONResponse({"id": campaign_id, "status": status})

    async def add_dnc(request: Request) -> Response:
        data = await body(request)
        phones = data.get("phones")
        if not isinstance(phones, list):
            raise CampaignInputError("phones must be a list")
        good, errors = [], []
        for i, raw in enumerate(phones):
            try:
                # Any valid number may be blocked, allowed country or not.
                good.append(normalise(str(raw), None, out.default_region).e164)
            except NumberRefused as exc:
                errors.append({"index": i, "reason": exc.reason})
        added = await store().campaigns.add_dnc(good, now=now(), reason=data.get("reason"))
        event(log, "dnc_added", added=added, rejected=len(errors))
        return JSONResponse({"added": added, "errors": errors})

    async def remove_dnc(request: Request) -> Response:
        try:
            phone = normalise(request.path_params["phone"], None, out.default_region)
        except NumberRefused as exc:
            raise CampaignInputError(exc.reason) from None
        removed = await store().campaigns.remove_dnc(phone.e164)
        event(log, "dnc_removed", removed=removed, number=mask_phone(phone.e164))
        return JSONResponse({"removed": removed})

    async def dial(request: Request) -> Response:
        from app.outbound.dialer import DialError
        from app.outbound.service import DialRefused

        service = ctx.outbound
        if service is None:
            return JSONResponse({"error": "outbound calling not configured"}, status_code=503)
        data = await body(request)
        variables = data.get("variables") or {}
        if not isinstance(variables, dict):
            raise CampaignInputError("variables must be an object")
        try:
            placed = await service.dial(
                str(data.get("to", "")),
                variables={str(k): str(v) for k, v in variables.items()},
                prompt=data.get("prompt"),
            )
        except DialRefused as exc:
            return JSONResponse({"error": exc.reason}, status_code=422)
        except DialError as exc:
            event(log, "dial_failed", level=30, error=exc.label)
            return JSONResponse({"error": exc.label}, status_code=502)
        return JSONResponse({"call_sid": placed.call_sid}, status_code=202)

    return [
        Route("/api/campaigns", guarded(create), methods=["POST"]),
        Route("/api/campaigns", guarded(list_campaigns), methods=["GET"]),
        Route("/api/campaigns/{id}", guarded(show), methods=["GET"]),
        Route("/api/campaigns/{id}/contacts", guarded(contacts), methods=["GET"]),
        Route("/api/campaigns/{id}/{command}", guarded(command), methods=["POST"]),
        Route("/api/dnc", guarded(add_dnc), methods=["POST"]),
        Route("/api/dnc/{phone}", guarded(remove_dnc), methods=["DELETE"]),
        Route("/api/dial", guarded(dial), methods=["POST"]),
    ]




def _wake(ctx: AppContext) -> None:
    supervisor = ctx.campaigns
    if supervisor is not None:
        supervisor.wake()
