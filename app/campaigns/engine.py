"""The campaign dialler: claims due contacts and places their calls, paced and capped.

Any number of instances may run the same campaign. Each loop claims one contact atomically
(see ``app.store.campaigns``), takes a global pacing slot (the account's and the campaign's
calls per second, shared through the database), re-checks the campaign state and the callee's
calling hours after the wait, then places the call. Results arrive by status callback on
whichever instance Twilio reaches; this engine learns of them from the database.

On start, and every few minutes, it reconciles calls left in flight (by a crash, or lost
callbacks) by fetching their status from Twilio.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from typing import Any

from app.campaigns import policy
from app.logs import event, get_logger, mask_phone
from app.outbound.dialer import DialError
from app.outbound.retry import retry_at
from app.outbound.service import DialRefused, OutboundService, pacing_interval
from app.store.campaigns import ClaimedContact
from app.store.shared import acquire_lease, release_lease

log = get_logger(__name__)

LEASE = "campaign-dialler"
LEASE_INTERVALS = 3  # supervisor polls a lease outlives


def instance_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(2)}"


class CampaignEngine:
    """Dials one campaign from this instance until it completes, pauses or is cancelled."""

    def __init__(
        self,
        service: OutboundService,
        campaign_id: str,
        *,
        instance: str | None = None,
        poll_s: float = 1.0,
        max_idle_s: float | None = 5.0,
        stale_after_s: float = 180.0,
        reconcile_every_s: float = 300.0,
    ) -> None:
        self.service = service
        self.store = service.store.campaigns
        self.clock = service.clock
        self.campaign_id = campaign_id
        self.instance = instance or instance_id()
        self.poll_s = poll_s  # real seconds between database checks while calls are in flight
        self.max_idle_s = max_idle_s  # longest clock sleep before re-checking (None: no cap)
        self.stale_after_s = stale_after_s
        self.reconcile_every_s = reconcile_every_s
        self.placed = 0
        self._throttles = 0
        self._last_reconcile = float("-inf")

    async def run(self) -> str:
        """Returns the campaign's status when this engine stops dialling it."""
        waiter = self.service.subscribe()
        event(log, "campaign_engine_started", campaign_id=self.campaign_id, instance=self.instance)
        try:
            while True:
                now = self.clock.now()
                if now - self._last_reconcile >= self.reconcile_every_s:
                    self._last_reconcile = now
                    await self.reconcile(now)
                claim = await self.store.claim(
                    self.campaign_id, instance=self.instance, now=now, next_open=policy.next_open
                )
                if claim.campaign_status != "running":
                    return claim.campaign_status
                if claim.contact is not None:
                    camp = await self.store.get(self.campaign_id)
                    assert camp is not None
                    await self._dial(claim.contact, camp)
                    continue
                if claim.pending == 0 and claim.in_flight == 0:
                    if await self.store.finish_if_done(self.campaign_id, now):
                        event(log, "campaign_completed", campaign_id=self.campaign_id)
                    continue  # the next claim reports the final status
                if claim.in_flight:
                    # Something will finish; a result may make a retry due or free capacity.
                    timeout = self.poll_s
                    if claim.next_due is not None and not claim.at_capacity:
                        timeout = min(timeout, max(0.0, claim.next_due - now))
                    await _wait(waiter, timeout)
                    continue
                if claim.next_due is None:  # counts moved under us; look again
                    continue
                delay = claim.next_due - now
                if self.max_idle_s is not None:
                    delay = min(delay, self.max_idle_s)
                await self.clock.sleep(delay)
        finally:
            self.service.unsubscribe(waiter)
            event(log, "campaign_engine_stopped", campaign_id=self.campaign_id, placed=self.placed)

    async def _dial(self, contact: ClaimedContact, camp: dict[str, Any]) -> None:
        store = self.store
        try:
            # Database work before the wait, so the request leaves right at its slot.
            current = await store.get(self.campaign_id)
            if current is None or current["status"] != "running":
                await store.release(contact, now=self.clock.now(), retry_at=self.clock.now())
                return
            await self.service.wait_for_slot(
                ((f"campaign:{self.campaign_id}", pacing_interval(camp["cps"])),)
            )
            now = self.clock.now()
            start, end = camp["hours_start_min"], camp["hours_end_min"]
            if not policy.within_hours(now, contact.timezones, start, end):
                # The window closed while we waited for a slot: not a single call outside it.
                opens = policy.next_open(now, contact.timezones, start, end) or now + 86_400
                await store.release(contact, now=now, retry_at=opens)
                return
        except asyncio.CancelledError:
            # Stopped before the call was placed: hand the contact back, as if never claimed.
            with contextlib.suppress(Exception):
                now = self.clock.now()
                await asyncio.shield(store.release(contact, now=now, retry_at=now))
            raise
        # From the request on, the call may exist at Twilio: a stop now waits for it to be
        # recorded (or its error settled) instead of handing the contact back to be dialled
        # again while the first call rings.
        placing = asyncio.ensure_future(self._place(contact, camp))
        try:
            await asyncio.shield(placing)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await placing
            raise

    async def _place(self, contact: ClaimedContact, camp: dict[str, Any]) -> None:
        out = self.service.out
        try:
            sid = await self.service.place(
                contact.phone,
                from_number=camp["from_number"] or out.from_number or "",
                variables=contact.variables,
                prompt=camp["prompt"],
                agent=camp["agent"],
                campaign_id=self.campaign_id,
                contact_id=contact.contact_id,
                attempt=contact.attempt,
                attempt_id=contact.attempt_id,
            )
        except DialError as exc:
            await self._dial_error(contact, exc)
            return
        except DialRefused as exc:  # our own set-up is incomplete: stop dialling
            await self._stop_for_config(contact, exc.reason)
            return
        self._throttles = 0
        self.placed += 1
        await self.store.mark_dialed(contact, call_sid=sid, now=self.clock.now())

    async def _dial_error(self, contact: ClaimedContact, exc: DialError) -> None:
        store, now = self.store, self.clock.now()
        event(
            log, "campaign_dial_error", level=30, campaign_id=self.campaign_id,
            contact_id=contact.contact_id, attempt=contact.attempt, error=exc.label,
            to=mask_phone(contact.phone),
        )
        if exc.kind == "throttled":
            # Too many concurrent REST requests on the account: every instance backs off.
            self._throttles += 1
            until = now + policy.throttle_backoff(self._throttles)
            await store.hold_pacing(self.service.account_key(), until)
            await store.release(contact, now=now, retry_at=now)
        elif exc.kind == "number":
            await store.dial_failed(
                contact, result="failed", error=exc.label, now=now, permanent=True,
                retry_rule=retry_at,
            )
        elif exc.kind == "config":
            await self._stop_for_config(contact, exc.label)
        elif exc.kind == "ambiguous":
            # The call may exist: leave the attempt in flight; its callbacks (which carry the
            # attempt id) or the reconciler settle it. Never dial it again blind.
            await store.note_attempt_error(contact, error=exc.label)
        else:
            await store.dial_failed(
                contact, result="failed", error=exc.label, now=now, permanent=False,
                retry_rule=retry_at,
            )

    async def _stop_for_config(self, contact: ClaimedContact, reason: str) -> None:
        now = self.clock.now()
        await self.store.release(contact, now=now, retry_at=now)
        with contextlib.suppress(Exception):
            await self.store.command(self.campaign_id, "pause", now)
        event(
            log, "campaign_paused_config_error", level=40, campaign_id=self.campaign_id,
            reason=reason,
        )

    async def reconcile(self, now: float) -> int:
        """Settle calls in flight for longer than ``stale_after_s``: fetch their status from
        Twilio; an attempt never placed (no CallSid) counts as failed and may be retried."""
        settled = 0
        for row in await self.store.in_flight(self.campaign_id):
            if row["claimed_at"] is None or now - row["claimed_at"] < self.stale_after_s:
                continue
            if row["call_sid"]:
                try:
                    update = await self.service.reconcile(row["call_sid"])
                except (DialError, DialRefused) as exc:
                    event(log, "reconcile_failed", level=30, error=str(exc))
                    continue
                settled += int(update.final)
                continue
            contact = ClaimedContact(
                contact_id=row["id"], attempt_id=row["attempt_id"] or 0, attempt=row["attempts"],
                phone="", timezones=(), variables={},
            )
            await self.store.dial_failed(
                contact, result="failed", error="lost before dialling", now=now,
                permanent=False, retry_rule=retry_at,
            )
            settled += 1
        if settled:
            event(log, "campaign_reconciled", campaign_id=self.campaign_id, settled=settled)
        return settled


async def _wait(waiter: asyncio.Event, wait_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(waiter.wait(), max(0.0, wait_s))
    waiter.clear()


class CampaignSupervisor:
    """In the server: runs an engine for every running campaign, and stops them on shutdown."""

    def __init__(self, service: OutboundService, *, poll_s: float = 5.0) -> None:
        self.service = service
        self.poll_s = poll_s
        self.instance = instance_id()
        self._engines: dict[str, asyncio.Task[str]] = {}
        self._owner = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="campaign-supervisor")

    def wake(self) -> None:
        self._wake.set()

    async def _owns_dialling(self) -> bool:
        """One dialler per deployment: every worker of every instance runs a supervisor, and
        the holder of the store's lease dials. Another takes over when its lease lapses."""
        db = self.service.store.db
        now = self.service.clock.now()
        held = await acquire_lease(
            db, LEASE, holder=self.instance, now=now, ttl_s=LEASE_INTERVALS * self.poll_s
        )
        if held != self._owner:
            self._owner = held
            event(log, "campaign_dialler_lease", held=held, instance=self.instance)
        return held

    async def _loop(self) -> None:
        while True:
            try:
                owner = await self._owns_dialling()
                running = (
                    await self.service.store.campaigns.list(status="running") if owner else []
                )
            except Exception as exc:  # noqa: BLE001 - a database outage must not end dialling
                event(log, "campaign_supervisor_error", level=40, error=type(exc).__name__)
                owner, running = self._owner, []
            if not owner:  # another worker dials: ours stop (each contact is claimed anyway)
                for task in self._engines.values():
                    task.cancel()
            for done in [cid for cid, t in self._engines.items() if t.done()]:
                task = self._engines.pop(done)
                if not task.cancelled() and task.exception() is not None:
                    event(
                        log, "campaign_engine_failed", level=40, campaign_id=done,
                        error=type(task.exception()).__name__,
                    )
            for camp in running:
                if camp["id"] not in self._engines:
                    engine = CampaignEngine(self.service, camp["id"], instance=self.instance)
                    self._engines[camp["id"]] = asyncio.create_task(
                        engine.run(), name=f"campaign-{camp['id']}"
                    )
            await _wait(self._wake, self.poll_s)

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._engines.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._engines.clear()
        self._task = None
        if self._owner:  # let another worker dial at once
            self._owner = False
            with contextlib.suppress(Exception):
                await release_lease(self.service.store.db, LEASE, holder=self.instance)
