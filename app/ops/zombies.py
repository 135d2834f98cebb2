"""Zombie sweep: a call record whose session died with its process is closed as interrupted.

Each instance touches the rows of its own live calls every interval (a heartbeat on
``calls.updated_at``). A row that a session opened (``started_at`` set), that the agent never
ended (``end_reason`` empty) and that nobody has touched for ``STALE_INTERVALS`` intervals
belongs to a session that no longer exists on any instance: it is ended with reason
``interrupted`` through the store's own ``end_call``. Rows of calls still ringing (no session
yet) are never touched. Runs at start-up and then periodically. Every worker beats for its own
calls (and renews their admission slots); only the holder of the sweep lease sweeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.logs import event, get_logger
from app.runtime import workers
from app.store.abandoned import close_abandoned, touch_live
from app.store.shared import acquire_lease, release_lease

if TYPE_CHECKING:
    from app.runtime.context import AppContext


log = get_logger(__name__)

REASON = "interrupted"
STALE_INTERVALS = 3  # missed heartbeats before a row counts as abandoned
LEASE = "zombie-sweep"


class ZombieSweeper:
    """Owns one periodic task: heartbeat this instance's live calls, then sweep."""

    def __init__(
        self, ctx: AppContext, interval_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.ctx = ctx
        self.interval_s = interval_s
        self.clock = clock
        self.closed_total = 0
        self.holder = workers.current().id
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="zombie-sweep")

    async def tick(self) -> list[str]:
        store = self.ctx.store
        if store is None:
            return []
        live = [c.call_id for c in self.ctx.calls.calls()]
        now = self.clock()
        stale_after_s = STALE_INTERVALS * self.interval_s
        await touch_live(store.db, live, now)
        if self.ctx.admission is not None:  # the same heartbeat keeps the calls' slots
            await self.ctx.admission.heartbeat(live, stale_after_s)
        # Every worker beats for its own calls; one of them (the lease holder) sweeps.
        if not await acquire_lease(
            store.db, LEASE, holder=self.holder, now=now, ttl_s=stale_after_s
        ):
            return []
        closed = await close_abandoned(
            store.db, set(live), now, stale_after_s, REASON
        )
        if closed:
            self.closed_total += len(closed)
            event(log, "zombie_calls_closed", count=len(closed), call_ids=closed)
        return closed

    async def _run(self) -> None:
        # The first sweep runs as soon as the store is open (start-up), then every interval.
        while True:
            delay = self.interval_s
            if self.ctx.store is None:
                delay = min(1.0, self.interval_s)
            else:
                try:
                    await self.tick()
                except Exception as exc:  # a database hiccup must not end the sweeping
                    event(log, "zombie_sweep_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        store = self.ctx.store
        if store is not None:  # another worker sweeps from its next tick, not after expiry
            with contextlib.suppress(Exception):
                await release_lease(store.db, LEASE, holder=self.holder)


async def start(ctx: AppContext) -> ZombieSweeper:
    """Server start-up: sweep now (once the store is open) and every interval after."""
    sweeper = ZombieSweeper(ctx, ctx.settings.ops.zombie_sweep_interval_s)
    ctx.zombie_sweeper = sweeper
    sweeper.start()
    return sweeper


async def stop(ctx: AppContext) -> None:
    sweeper, ctx.zombie_sweeper = ctx.zombie_sweeper, None
    if sweeper is not None:
        await sweeper.aclose()
