"""Prometheus metrics: a call observer plus ``GET /metrics``.

Where the latency went, per turn stage; how long the greeting took to start; barge-ins;
provider errors and reconnects; call durations and cost; live calls by transport (set from
the call registry on each change and again at each scrape, so the gauge cannot drift).

The metrics live in their own ``CollectorRegistry`` (one per ``AppContext``), so tests and
several apps in one process do not share counters. Under ``serve --workers N`` every worker
writes prometheus_client's multiprocess files and any worker's scrape shows them all, summed.
``/metrics`` requires ``Authorization: Bearer <METRICS_TOKEN>`` when that setting is present.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from app.core.providers import CallInfo
from app.core.records import CallEnded, CallEvent, TurnMetrics, Usage
from app.logs import event, get_logger
from app.ops import pricing
from app.runtime.usage import add
from app.transports.peers import bearer_ok
from telephony.security import is_loopback

if TYPE_CHECKING:
    from app.runtime.context import AppContext


log = get_logger(__name__)

PREFIX = "voice_agent"
TRANSPORTS = ("twilio", "webrtc")
# Seconds. Conversation feels broken past ~1.5 s of silence, so the buckets are dense below it.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
DURATION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
MAX_REASONS = 24  # end reasons are short code-chosen strings; cap them anyway

# (usage, duration seconds, call) -> cost in dollars, or None when unknown
Pricer = Callable[[Usage, float, CallInfo], float | None]


class _LiveCalls:
    """Live calls by transport, the admission limit and the drain flag, set from the call
    registry on every change (and again at a scrape). Under ``--workers N`` each worker writes
    its own values to prometheus_client's multiprocess files and the scrape sums the workers
    alive (``livesum``; ``livemax`` for the flag)."""

    def __init__(self, calls: Any, registry: CollectorRegistry) -> None:
        self.calls = calls
        self.seen: set[str] = set(TRANSPORTS)  # a transport's gauge goes back to 0, not stale
        self.active = Gauge(
            f"{PREFIX}_active_calls", "Calls in progress on this instance", ["transport"],
            multiprocess_mode="livesum", registry=registry,
        )
        self.capacity = Gauge(
            f"{PREFIX}_call_capacity", "Admission limit of this instance",
            multiprocess_mode="livesum", registry=registry,
        )
        self.draining = Gauge(
            f"{PREFIX}_draining", "1 while the instance drains before exit",
            multiprocess_mode="livemax", registry=registry,
        )
        calls.listeners.append(self.update)
        self.update()

    def update(self) -> None:
        self.seen.update(c.transport for c in self.calls.calls())
        for transport in self.seen:
            self.active.labels(transport).set(self.calls.count(transport))
        self.capacity.set(self.calls.max_calls)
        self.draining.set(1 if self.calls.draining else 0)


def multiprocess_dir() -> str | None:
    """Set by ``serve --workers N`` for its workers: where their metrics meet."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """Receives every record of every call (``CallObserver``) and counts it. Never blocks."""

    def __init__(self, calls: Any | None = None, pricer: Pricer | None = None) -> None:
        self.registry = CollectorRegistry()
        self.pricer = pricer
        r = self.registry
        self.shared_dir = multiprocess_dir()
        self._live = _LiveCalls(calls, r) if calls is not None else None
        self.turn_latency = Histogram(
            f"{PREFIX}_turn_latency_seconds",
            "Agent turn latency by stage (endpoint_to_stt_final, llm_first_token, "
            "tts_first_audio, total, ...)",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.turns = Counter(
            f"{PREFIX}_turns", "Agent turns, by how they were covered",
            ["kind"], registry=r,
        )
        self.greeting = Histogram(
            f"{PREFIX}_greeting_first_audio_seconds",
            "From call start to the first greeting audio sent to the caller",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.barge_ins = Counter(
            f"{PREFIX}_barge_ins", "Caller interrupted the agent", ["transport"], registry=r
        )
        self.provider_errors = Counter(
            f"{PREFIX}_provider_errors", "Provider failures", ["provider", "type"], registry=r
        )
        self.provider_reconnects = Counter(
            f"{PREFIX}_provider_reconnects", "Provider streams reopened", ["provider", "type"],
            registry=r,
        )
        self.calls_started = Counter(
            f"{PREFIX}_calls_started", "Calls that started", ["transport", "direction"], registry=r
        )
        self.calls_ended = Counter(
            f"{PREFIX}_calls_ended", "Calls that ended, by reason", ["transport", "reason"],
            registry=r,
        )
        self.calls_rejected = Counter(
            f"{PREFIX}_calls_rejected", "Calls refused at admission", ["transport", "reason"],
            registry=r,
        )
        self.duration = Histogram(
            f"{PREFIX}_call_duration_seconds", "Call length", ["transport"],
            buckets=DURATION_BUCKETS, registry=r,
        )
        self.cost = Counter(
            f"{PREFIX}_call_cost_dollars", "Provider cost of ended calls", ["transport"], registry=r
        )
        self.unpriced = Counter(
            f"{PREFIX}_calls_unpriced", "Ended calls whose cost could not be computed",
            ["transport"], registry=r,
        )
        self._started: dict[str, float] = {}
        self._usage: dict[str, Usage] = {}
        self._reasons: set[str] = set()

    # ------------------------------------------------------------------ observer

    def record(self, call: CallInfo, record: Any) -> None:
        if isinstance(record, TurnMetrics):
            self._turn(record)
        elif isinstance(record, CallEvent):
            self._event(call, record)
        elif isinstance(record, Usage):  # increments: summed per call
            u = self._usage.get(call.call_id)
            self._usage[call.call_id] = record if u is None else add(u, record)
        elif isinstance(record, CallEnded):
            self._ended(call, record)

    def rejected(self, transport: str, reason: str) -> None:
        """For transports: a call was refused at admission (over capacity, draining)."""
        self.calls_rejected.labels(transport, _label(reason)).inc()

    def _turn(self, turn: TurnMetrics) -> None:
        for stage, ms in turn.stages_ms().items():
            if ms is not None and ms >= 0:
                self.turn_latency.labels(stage).observe(ms / 1000.0)
        kind = "fallback" if turn.fallback else "filler" if turn.filler else "direct"
        self.turns.labels(kind).inc()

    def _event(self, call: CallInfo, ev: CallEvent) -> None:
        detail = ev.detail
        if ev.kind == "call_started":
            self._started[call.call_id] = ev.at
            self.calls_started.labels(call.transport, call.direction).inc()
        elif ev.kind == "greeting_first_audio" and isinstance(detail.get("ms"), int | float):
            self.greeting.observe(float(detail["ms"]) / 1000.0)
        elif ev.kind == "barge_in":
            self.barge_ins.labels(call.transport).inc()
        elif ev.kind in {"provider_error", "provider_reconnect"}:
            counter = self.provider_errors if ev.kind == "provider_error" else (
                self.provider_reconnects
            )
            counter.labels(
                _label(str(detail.get("provider", "unknown"))),
                _label(str(detail.get("type", "unknown"))),
            ).inc()

    def _ended(self, call: CallInfo, ended: CallEnded) -> None:
        started = self._started.pop(call.call_id, None)
        usage = self._usage.pop(call.call_id, None)
        self.calls_ended.labels(call.transport, self._reason(ended.reason)).inc()
        duration = max(ended.at - started, 0.0) if started is not None else None
        if duration is not None:
            self.duration.labels(call.transport).observe(duration)
        cost = None
        if self.pricer is not None and usage is not None:
            try:
                cost = self.pricer(usage, duration or 0.0, call)
            except Exception as exc:  # pricing must never break the call's end
                event(log, "pricing_failed", error=type(exc).__name__)
        if cost is None:
            self.unpriced.labels(call.transport).inc()
        else:
            self.cost.labels(call.transport).inc(max(cost, 0.0))

    def _reason(self, reason: str) -> str:
        label = _label(reason)
        if label in self._reasons or len(self._reasons) < MAX_REASONS:
            self._reasons.add(label)
            return label
        return "other"

    # ------------------------------------------------------------------ exposition

    def render(self) -> bytes:
        if self._live is not None:
            self._live.update()
        if self.shared_dir:  # every worker of this machine, summed
            merged = CollectorRegistry()
            MultiProcessCollector(merged, path=self.shared_dir)
            return generate_latest(merged)
        return generate_latest(self.registry)


def _label(value: str) -> str:
    """A bounded, safe label value: ``ConnectionError: [Errno 111]...`` -> ``connectionerror``."""
    head = re.split(r"[:(\[]", value, maxsplit=1)[0]
    return re.sub(r"[^a-z0-9_]+", "_", head.strip().lower()).strip("_")[:40] or "unknown"


def is_private(host: str | None) -> bool:
    """Loopback or a private range (fly's 6PN is fdaa::/16, inside fc00::/7)."""
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    return ip.is_private or ip.is_loopback


def install(ctx: AppContext) -> Metrics:
    """The context's metrics, created and registered as a call observer on first use."""
    metrics = ctx.metrics
    if metrics is None:
        price = ctx.pricer or pricing.pricer(pricing.rates_from(ctx.settings.ops))
        metrics = Metrics(ctx.calls, pricer=price)
        ctx.metrics = metrics
        ctx.observers.append(metrics)
    return metrics


def routes(ctx: AppContext) -> list[BaseRoute]:
    """``/metrics`` on the public port: with ``METRICS_TOKEN`` to its bearer, else to direct
    loopback peers only (a scraper on the private network uses the metrics port)."""
    metrics = install(ctx)
    token = ctx.settings.ops.metrics_token

    async def scrape(request: Request) -> Response:
        client = request.client.host if request.client else None
        allowed = bearer_ok(request, token) if token else is_loopback(client, request.headers)
        if not allowed:
            event(log, "metrics_unauthorised", logging.WARNING, client=client)
            return PlainTextResponse(
                "unauthorised\n", status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", scrape, methods=["GET"])]


def internal_app(ctx: AppContext) -> Starlette:
    """The metrics port's app (``METRICS_PORT``; fly's ``[metrics]`` scrapes it over the private
    network): ``/metrics`` to private and loopback peers, and nothing else."""
    metrics = install(ctx)

    async def scrape(request: Request) -> Response:
        client = request.client.host if request.client else None
        if not is_private(client):
            event(log, "metrics_unauthorised", logging.WARNING, client=client, port="internal")
            return PlainTextResponse("forbidden\n", status_code=403)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", scrape, methods=["GET"])])
