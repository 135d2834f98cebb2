"""Admission: may this machine take one more call?

``MAX_CONCURRENT_CALLS`` is per worker, so a machine of N workers takes N times that. The
answer webhook (or a web call's offer) reserves a slot; the worker that runs the call's stream
holds it through its heartbeat (``app.ops.zombies``) and frees it when the call ends. With a
store the slots live in it (``app.store.shared``), so the busy answer is exact whichever worker
answers and whichever one the stream then reaches. Without a store, or while it is down, each
worker counts its own calls and reservations, as a single process always did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.logs import event, get_logger
from app.runtime import workers
from app.store.shared import free_slot, hold_slots, reserve_slot

if TYPE_CHECKING:
    from app.runtime.context import AppContext

log = get_logger(__name__)

# An answered call holds its slot until its stream starts (Twilio connects within a second or
# two) and its worker's heartbeat takes it over, so a burst of webhooks cannot admit more
# calls than the limit.
RESERVATION_S = 30.0


class Admission:
    def __init__(self, ctx: AppContext, now: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.now = now
        self.worker = workers.current()
        self._reserved: dict[str, float] = {}  # call id -> when its local reservation lapses

    @property
    def capacity(self) -> int:
        """Calls this machine takes: every worker's cap."""
        return self.ctx.calls.max_calls * self.worker.count

    async def reserve(self, call_id: str, ttl_s: float = RESERVATION_S) -> bool:
        """Take a slot for ``call_id`` (idempotent: a retried webhook keeps its slot)."""
        if self.ctx.calls.draining:
            return False
        store = self.ctx.store
        if store is not None:
            try:
                return await reserve_slot(
                    store.db, call_id, instance=self.worker.instance, capacity=self.capacity,
                    now=self.now(), ttl_s=ttl_s,
                )
            except Exception as exc:  # the store is down: this worker's own count decides
                event(log, "admission_store_failed", logging.WARNING, error=type(exc).__name__)
        return self._reserve_here(call_id, ttl_s)

    def _reserve_here(self, call_id: str, ttl_s: float) -> bool:
        now = self.now()
        self._reserved = {sid: t for sid, t in self._reserved.items() if t > now}
        if call_id in self._reserved:
            return True
        calls = self.ctx.calls
        if not calls.can_admit() or len(calls) + len(self._reserved) >= calls.max_calls:
            return False
        self._reserved[call_id] = now + ttl_s
        return True

    def started(self, call_id: str) -> None:
        """The call's stream started here: it is in the registry now, not reserved."""
        self._reserved.pop(call_id, None)

    async def heartbeat(self, live_ids: list[str], lease_s: float) -> None:
        """The calls this worker runs keep their slots for another ``lease_s``."""
        store = self.ctx.store
        if store is not None and live_ids:
            await hold_slots(
                store.db, live_ids, instance=self.worker.instance, holder=self.worker.id,
                expires_at=self.now() + lease_s,
            )

    async def ended(self, call_id: str) -> None:
        """The call is over: its slot is free for the next caller at once."""
        self._reserved.pop(call_id, None)
        store = self.ctx.store
        if store is None:
            return
        try:
            await free_slot(store.db, call_id)
        except Exception as exc:  # it expires with the missing heartbeat instead
            event(log, "admission_free_failed", logging.WARNING, error=type(exc).__name__)


def admission(ctx: AppContext) -> Admission:
    """The context's admission, made on first use (both transports share it)."""
    existing = ctx.admission
    if isinstance(existing, Admission):
        return existing
    made = Admission(ctx)
    ctx.admission = made
    return made
