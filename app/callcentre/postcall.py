"""After each call: outcome and summary onto the call record, then a signed webhook.

``submit`` (from the call's task, never blocking) queues a job; one worker task, owned by this
object, extracts the outcome, stores it, records a delivery row (once per call) and posts it,
retrying with exponential backoff. Each request carries ``Idempotency-Key: <call id>`` and
``X-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``; the timestamp lets
a receiver refuse replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from app.callcentre.deliveries import Deliveries, MemoryDeliveries
from app.callcentre.outcome import Outcome, extract
from app.core.records import TranscriptLine
from app.logs import bind_call, event, get_logger, register_secret
from app.store.deliveries import DbDeliveries, Delivery

if TYPE_CHECKING:
    from app.runtime.context import AppContext


log = get_logger(__name__)

SIGNATURE_HEADER = "X-Signature"
MAX_QUEUED = 1000
# 4xx answers that may succeed later; any other 4xx is the receiver refusing this payload.
_RETRYABLE_4XX = {408, 409, 425, 429}


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance_s: float = 300) -> bool:
    """What a receiver does (and what the tests check)."""
    fields = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(fields.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


@dataclass(frozen=True, slots=True)
class Job:
    call: Any  # CallInfo
    agent: str
    transcript: tuple[TranscriptLine, ...]
    end_reason: str | None
    transfer_result: str | None
    recording_sid: str | None
    fields: tuple[str, ...]  # names of keypad fields collected (never their digits)
    agent_outcome: tuple[str, str | None] | None = None  # set_outcome during the call


class PostCall:
    def __init__(
        self,
        ctx: AppContext,
        url: str | None,
        secret: str | None,
        *,
        max_attempts: int = 8,
        retry_base_s: float = 2.0,
        retry_max_s: float = 600.0,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        deliveries: Deliveries | None = None,
    ) -> None:
        register_secret(secret)
        self.ctx = ctx
        self.url = url
        self.secret = secret
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.clock = clock
        self._deliveries = deliveries
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None  # made on first use, in the loop
        self._jobs: asyncio.Queue[Job] = asyncio.Queue(maxsize=MAX_QUEUED)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.outcomes: dict[str, Outcome] = {}  # latest per call, for tests and the API

    # ------------------------------------------------------------ input

    def submit(self, features: Any, runner: Any) -> None:
        job = Job(
            call=features.call,
            agent=features.agent_name,
            transcript=tuple(runner.transcript),
            end_reason=runner.end_reason,
            transfer_result=features.transfer_result,
            recording_sid=features.recording_sid,
            fields=tuple(features.fields),
            agent_outcome=features.agent_outcome,
        )
        try:
            self._jobs.put_nowait(job)
        except asyncio.QueueFull:
            with bind_call(job.call.call_id):
                event(log, "post_call_dropped", logging.ERROR, queued=self._jobs.qsize())
            return
        self._wake.set()

    # ------------------------------------------------------------ worker

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._worker(), name="post-call")

    async def aclose(self, within: float = 10.0) -> None:
        """Finish queued jobs (bounded), then stop; pending deliveries stay in the store."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._jobs.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def deliveries(self) -> Deliveries:
        if self._deliveries is None:
            store = self.ctx.store
            self._deliveries = DbDeliveries(store.db) if store is not None else MemoryDeliveries()
        return self._deliveries

    async def _worker(self) -> None:
        while True:
            self._wake.clear()
            while not self._jobs.empty():
                job = self._jobs.get_nowait()
                with bind_call(job.call.call_id):
                    try:
                        await self.process(job)
                    except Exception as exc:  # one bad call must not stop the others
                        event(log, "post_call_failed", logging.ERROR, error=type(exc).__name__)
                    finally:
                        self._jobs.task_done()
            try:
                await self.send_due()
                next_at = await self.deliveries().next_due() if self.url else None
            except Exception as exc:  # the database is down: try again soon
                event(log, "post_call_store_failed", logging.ERROR, error=type(exc).__name__)
                next_at = self.clock() + 5.0
            wait = 30.0 if next_at is None else max(0.0, min(30.0, next_at - self.clock()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def process(self, job: Job) -> Outcome | None:
        if not self.url and self.ctx.store is None:
            return None  # nowhere to keep it: spare the model the request
        outcome = await extract(
            self.ctx.providers.llm, job.transcript, job.end_reason, job.transfer_result
        )
        if job.agent_outcome is not None and job.transfer_result != "transferred":
            # The agent said how the call went while it was on it: that stands, whatever the
            # call's end looks like from the transcript (and whenever its tool finished).
            label, summary = job.agent_outcome
            outcome = Outcome(label, summary or outcome.summary, "agent")
        self.outcomes[job.call.call_id] = outcome
        await self._store_outcome(job.call.call_id, outcome)
        event(log, "call_outcome", outcome=outcome.outcome, source=outcome.source,
              summary_chars=len(outcome.summary))  # fmt: skip
        if self.url:
            if await self.deliveries().add(job.call.call_id, payload(job, outcome), self.clock()):
                self._wake.set()
            else:
                event(log, "post_call_duplicate")  # already queued or sent for this call
        return outcome

    async def _store_outcome(self, call_id: str, outcome: Outcome) -> None:
        store = self.ctx.store
        if store is None:
            return
        writer = self.ctx.call_records
        if writer is not None:  # the call row is written by the record writer: let it land
            await writer.flush(wait_s=5.0)
        ok = await store.calls.set_outcome(call_id, outcome.outcome, outcome.summary, self.clock())
        if not ok:
            event(log, "call_outcome_unrecorded", logging.WARNING, reason="no call row")

    async def send_due(self) -> int:
        """Post every delivery that is due. Returns how many were delivered."""
        if not self.url:
            return 0
        sent = 0
        for call_id in await self.deliveries().due(self.clock()):
            delivery = await self.deliveries().claim(call_id, self.clock())
            if delivery is not None:
                with bind_call(call_id):
                    sent += await self._send(delivery)
        return sent

    async def _send(self, d: Delivery) -> int:
        assert self.url is not None
        body = json.dumps(d.payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": d.call_id,
            "X-Delivery-Attempt": str(d.attempts),
            "User-Agent": "voice-agent-webhook/1",
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, int(self.clock()), body)
        error = ""
        retryable = True
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False)
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
            if 200 <= response.status_code < 300:
                await self.deliveries().delivered(d.call_id, self.clock())
                event(log, "post_call_delivered", attempts=d.attempts)
                return 1
            error = f"http {response.status_code}"
            code = response.status_code
            retryable = code >= 500 or code in _RETRYABLE_4XX
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        if retryable and d.attempts < self.max_attempts:
            delay = min(self.retry_max_s, self.retry_base_s * 2 ** (d.attempts - 1))
            await self.deliveries().retry(d.call_id, self.clock() + delay, error)
            event(log, "post_call_retry", attempts=d.attempts, error=error, delay_s=delay)
        else:
            await self.deliveries().failed(d.call_id, error)
            event(log, "post_call_undeliverable", logging.ERROR, attempts=d.attempts, error=error)
        return 0


def payload(job: Job, outcome: Outcome) -> dict[str, Any]:
    c = job.call
    return {
        "event": "call.completed",
        "call_id": c.call_id,
        "transport": c.transport,
        "direction": c.direction,
        "from": c.from_number,
        "to": c.to_number,
        "agent": job.agent,
        "outcome": outcome.outcome,
        "summary": outcome.summary,
        "outcome_source": outcome.source,
        "end_reason": job.end_reason,
        "transfer": job.transfer_result,
        "recording_sid": job.recording_sid,
        "caller_turns": sum(1 for line in job.transcript if line.role == "caller"),
        "keypad_fields": list(job.fields),
    }
