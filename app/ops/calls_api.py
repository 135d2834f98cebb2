"""The operator's API and dashboard: live calls, recent calls with their records, campaigns.

``GET /api/calls``          recent calls, newest first (``limit``, ``offset``, ``direction``,
                            ``status``, ``campaign``)
``GET /api/calls/{id}``     one call: transcript, per-turn latency by stage, events, usage, cost
``GET /api/live``           calls in progress on this instance
``GET /api/campaigns``      campaigns with their progress
``GET /dashboard``          the page (static; it fetches the above with the operator's token)

Every ``/api`` route needs ``Authorization: Bearer <API_TOKEN>``; without an ``API_TOKEN`` only
direct loopback peers are served. Phone numbers are masked in every answer: dashboards end up
on shared screens and in screenshots. Transcripts are shown (that is what the page is for) but
never logged.
"""

from __future__ import annotations

import importlib.resources
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from app.core.records import TurnMetrics
from app.logs import event, get_logger, mask_phone
from app.ops import pricing, zombies
from app.runtime import workers
from app.store.abandoned import live_calls
from app.transports.peers import bearer_ok
from telephony.security import is_loopback

if TYPE_CHECKING:
    from app.runtime.context import AppContext


log = get_logger(__name__)

MAX_LIMIT = 200
_STAMPS = ("speech_end", "stt_final", "turn_committed", "llm_first_token", "tts_first_audio",
           "first_audio_sent")


# --------------------------------------------------------------------------- shaping (pure)


def _cost(row: dict[str, Any], rates: pricing.Rates | None) -> float | None:
    """The stored cost, else priced from the stored usage with the configured rates."""
    if row.get("cost") is not None or rates is None or not row.get("end_reason"):
        return row.get("cost")
    duration = row.get("duration_s")
    if duration is None and row.get("ended_at") and row.get("started_at"):
        duration = row["ended_at"] - row["started_at"]
    usage = pricing.usage_from_row(row.get("usage"))
    return pricing.call_cost(rates, usage, duration, row.get("transport") or "")


def call_summary(row: dict[str, Any], rates: pricing.Rates | None = None) -> dict[str, Any]:
    return {
        "id": row["id"],
        "transport": row.get("transport"),
        "direction": row.get("direction"),
        "status": row.get("status"),
        # a web caller has no number: say where the call came from instead
        "from": mask_phone(row.get("from_number")) if row.get("from_number")
        else ("browser" if row.get("transport") == "webrtc" else None),
        "to": mask_phone(row.get("to_number")),
        "created_at": row.get("created_at"),
        "started_at": row.get("started_at"),
        "ended_at": row.get("ended_at"),
        "duration_s": row.get("duration_s"),
        "end_reason": row.get("end_reason"),
        "outcome": row.get("outcome"),
        "cost": _cost(row, rates),
        "campaign_id": row.get("campaign_id"),
    }


def turn_view(row: dict[str, Any]) -> dict[str, Any]:
    """A stored turn with its latency split into stages (ms), the same split as the metrics."""
    metrics = TurnMetrics(turn=row["turn"], **{k: row.get(k) for k in _STAMPS})
    return {
        "turn": row["turn"],
        "stages_ms": metrics.stages_ms(),
        "filler": bool(row.get("filler")),
        "fallback": bool(row.get("fallback")),
    }


def recording_source(url: str | None, twilio: Any) -> tuple[str, tuple[str, str]] | None:
    """(MP3 URL, basic auth) for a stored recording URL, only on Twilio's own API host (or the
    configured TWILIO_API_BASE_URL): the stored URL came from a webhook, and our credentials
    must never be sent anywhere else."""
    if not url or not twilio.account_sid:
        return None
    allowed = {"api.twilio.com"}
    if twilio.api_base_url:
        allowed.add(urlsplit(twilio.api_base_url).netloc)
    if urlsplit(url).netloc not in allowed:
        return None
    if twilio.api_key and twilio.api_secret:
        auth = (twilio.api_key, twilio.api_secret)
    elif twilio.auth_token:
        auth = (twilio.account_sid, twilio.auth_token)
    else:
        return None
    return (url if url.endswith(".mp3") else url + ".mp3"), auth


def call_detail(call: dict[str, Any], rates: pricing.Rates | None = None) -> dict[str, Any]:
    return {
        **call_summary(call, rates),
        "usage": call.get("usage") or {},
        "summary": call.get("summary"),
        "recording": bool(call.get("recording_url")),
        "transcript": [
            {k: line.get(k) for k in ("role", "text", "at", "interrupted", "turn")}
            for line in call.get("transcript", [])
        ],
        "turns": [turn_view(t) for t in call.get("turns", [])],
        "events": [
            {k: ev.get(k) for k in ("kind", "at", "detail")} for ev in call.get("events", [])
        ],
    }


def live_view(calls: Any) -> list[dict[str, Any]]:
    out = []
    for info in calls.calls():
        runner = calls.get(info.call_id)
        turns = list(getattr(runner, "turns", []) or [])
        last = turns[-1].stages_ms().get("total") if turns else None
        out.append({
            "id": info.call_id,
            "transport": info.transport,
            "direction": info.direction,
            "from": mask_phone(info.from_number),
            "to": mask_phone(info.to_number),
            "turns": len(turns),
            "last_turn_ms": last,
            "ending": bool(getattr(runner, "ended", False)),
        })
    return out


def merge_live(rows: list[dict[str, Any]], here: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The store's live calls (every worker's) in the live view's shape, with this worker's
    own calls as it sees them (fresher than its last write)."""
    mine = {c["id"]: c for c in here}
    out = [
        mine.pop(row["id"], None) or {
            "id": row["id"],
            "transport": row["transport"],
            "direction": row["direction"],
            "from": mask_phone(row["from_number"]),
            "to": mask_phone(row["to_number"]),
            "turns": int(row["turns"] or 0),
            "last_turn_ms": row["last_turn_ms"],
            "ending": False,
        }
        for row in rows
    ]
    return out + list(mine.values())  # started here but not yet written


def _int(raw: str | None, default: int, lo: int, hi: int) -> int:
    try:
        return max(lo, min(hi, int(raw))) if raw is not None else default
    except ValueError:
        return default


# --------------------------------------------------------------------------- routes


def routes(ctx: AppContext) -> list[BaseRoute]:
    token = ctx.settings.ops.api_token
    rates = pricing.rates_from(ctx.settings.ops)

    def refused(request: Request) -> Response | None:
        if token:
            ok = bearer_ok(request, token)
        else:
            ok = is_loopback(request.client.host if request.client else None, request.headers)
        if ok:
            return None
        event(log, "api_unauthorised", logging.WARNING, path=request.url.path)
        return JSONResponse({"error": "unauthorised"}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    def store() -> Any | None:
        return ctx.store

    def no_store() -> JSONResponse:
        return JSONResponse({"error": "call records are not enabled"}, status_code=503)

    async def list_calls(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        if (s := store()) is None:
            return no_store()
        q = request.query_params
        rows = await s.calls.list_calls(
            limit=_int(q.get("limit"), 50, 1, MAX_LIMIT),
            offset=_int(q.get("offset"), 0, 0, 10**9),
            direction=q.get("direction") or None,
            status=q.get("status") or None,
            campaign_id=q.get("campaign") or None,
            transport=q.get("transport") or None,
            search=(q.get("q") or "").strip() or None,
        )
        return JSONResponse({"calls": [call_summary(r, rates) for r in rows]})

    async def get_call(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        if (s := store()) is None:
            return no_store()
        call_id = request.path_params["call_id"]
        if len(call_id) > 64:
            return JSONResponse({"error": "no such call"}, status_code=404)
        call = await s.calls.get_call(call_id)
        if call is None:
            return JSONResponse({"error": "no such call"}, status_code=404)
        detail = call_detail(call, rates)
        detail["live"] = ctx.calls.get(call_id) is not None
        return JSONResponse(detail)

    async def recording(request: Request) -> Response:
        """The call's recording as MP3, fetched from Twilio with the account's credentials (a
        browser cannot: Twilio's media URLs need them), streamed through without buffering."""
        if (denied := refused(request)) is not None:
            return denied
        if (s := store()) is None:
            return no_store()
        call_id = request.path_params["call_id"][:64]
        call = await s.calls.get_call(call_id)
        url = (call or {}).get("recording_url")
        source = recording_source(url, ctx.settings.twilio)
        if source is None:
            return JSONResponse({"error": "no recording"}, status_code=404)
        import httpx

        client = httpx.AsyncClient(timeout=30, auth=source[1])
        upstream = await client.send(client.build_request("GET", source[0]), stream=True)
        if upstream.status_code != 200:
            await upstream.aclose()
            await client.aclose()
            event(log, "recording_fetch_failed", logging.WARNING, status=upstream.status_code)
            return JSONResponse({"error": "recording unavailable"}, status_code=502)

        async def body() -> Any:
            try:
                async for part in upstream.aiter_bytes():
                    yield part
            finally:
                await upstream.aclose()
                await client.aclose()

        return StreamingResponse(body(), media_type="audio/mpeg",
                                 headers={"Cache-Control": "no-store"})

    async def live(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        now = time.time()
        here = live_view(ctx.calls)
        calls = here
        if (st := store()) is not None and workers.current().count > 1:
            # Several workers: the store knows every call; this worker adds what it holds.
            fresh_s = zombies.STALE_INTERVALS * ctx.settings.ops.zombie_sweep_interval_s
            try:
                calls = merge_live(await live_calls(st.db, now, fresh_s), here)
            except Exception as exc:  # the store is down: this worker's calls, said so
                event(log, "live_calls_store_failed", error=type(exc).__name__)
        capacity = ctx.admission.capacity if ctx.admission is not None else ctx.calls.max_calls
        return JSONResponse({
            "calls": calls,
            "capacity": capacity,
            "draining": ctx.calls.draining,
            "now": now,
        })

    async def list_campaigns(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        if (s := store()) is None:
            return no_store()
        out = []
        for row in (await s.campaigns.list())[:20]:
            progress = await s.campaigns.progress(row["id"])
            out.append({k: row.get(k) for k in ("id", "name", "status", "created_at")}
                       | {"progress": progress})
        return JSONResponse({"campaigns": out})

    return [
        Route("/api/calls", list_calls, methods=["GET"]),
        Route("/api/calls/{call_id}", get_call, methods=["GET"]),
        Route("/api/calls/{call_id}/recording", recording, methods=["GET"]),
        Route("/api/live", live, methods=["GET"]),
        # Not /api/campaigns: that is the campaign API's, behind its own token.
        Route("/api/dashboard/campaigns", list_campaigns, methods=["GET"]),
        Route("/dashboard", _page("dashboard.html", "text/html; charset=utf-8"), methods=["GET"]),
        Route("/dashboard.js", _page("dashboard.js", "text/javascript; charset=utf-8"),
              methods=["GET"]),
        Route("/dashboard.css", _page("dashboard.css", "text/css; charset=utf-8"),
              methods=["GET"]),
    ]


def _page(name: str, media_type: str) -> Any:
    body = (importlib.resources.files("app") / "web" / name).read_bytes()

    async def serve(request: Request) -> Response:
        return Response(body, media_type=media_type, headers={
            "Cache-Control": "no-store",
            # everything is served from here; nothing from a CDN
            "Content-Security-Policy": (
                "default-src 'self'; style-src 'self'; img-src 'self' data:; "
                "media-src 'self' blob:"
            ),
        })

    return serve
