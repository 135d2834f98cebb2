"""Graceful drain: a deploy or restart must not cut live calls.

On SIGTERM or SIGINT the server stops admitting calls (``/health`` turns 503 "draining", the
webhook answers the polite "busy" TwiML), lets live calls finish on their own for up to
``drain_timeout_s``, then asks each remaining call to say goodbye and end
(``runner.shutdown``), waits ``grace_s`` for that, and only then lets uvicorn stop listening.
The process then exits 0. A second SIGINT (Ctrl+C twice) skips the wait.

``DrainingServer`` replaces uvicorn's own signal handling, which would stop listening at once
(refusing the webhooks of calls still being drained) and re-raise the signal after shutdown
(so the process would die by the signal instead of exiting 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Generator

import uvicorn

from app.logs import event, get_logger
from app.runtime.context import CallRegistry

log = get_logger(__name__)

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SHUTDOWN_REASON = "server shutting down"


class Drainer:
    """Drives one drain of a ``CallRegistry``. ``begin`` is idempotent; ``done`` is set when
    no call is left (or the grace period after the goodbyes ran out)."""

    def __init__(
        self,
        calls: CallRegistry,
        timeout_s: float,
        grace_s: float,
        on_done: Callable[[], None] | None = None,
        handover: bool = False,
    ) -> None:
        self.calls = calls
        self.handover = handover
        self.handed_over = 0
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self.on_done = on_done
        self.done = asyncio.Event()
        self.ended_naturally: int | None = None  # calls that finished within the deadline
        self.told_goodbye: int = 0
        self.left_over: int = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._task is not None

    def begin(self, reason: str = "signal") -> None:
        if self._task is not None:
            return
        self.calls.draining = True
        event(log, "drain_started", reason=reason, live_calls=len(self.calls),
              timeout_s=self.timeout_s)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="drain")

    async def _run(self) -> None:
        at_start = len(self.calls)
        if self.handover:
            # Calls that can go on elsewhere are handed over at their next quiet moment; the
            # rest (web calls) drain as before.
            handovers = self.calls.handovers()
            self.handed_over = len(handovers)
            for hand_over in handovers:
                try:
                    hand_over()
                except Exception:
                    log.exception("drain_handover_failed")
            event(log, "drain_handover", calls=len(handovers))
        try:
            if not await self.calls.wait_empty(self.timeout_s):
                runners = self.calls.runners()
                self.told_goodbye = len(runners)
                event(log, "drain_deadline", live_calls=len(runners))
                for runner in runners:
                    try:
                        runner.shutdown(SHUTDOWN_REASON)
                    except Exception:  # one broken call must not keep the others on the line
                        log.exception("drain_shutdown_failed")
                if not await self.calls.wait_empty(self.grace_s):
                    self.left_over = len(self.calls)
                    event(log, "drain_calls_left", live_calls=self.left_over)
            self.ended_naturally = at_start - self.told_goodbye - self.handed_over
            event(log, "drain_finished", ended_naturally=self.ended_naturally,
                  handed_over=self.handed_over, told_goodbye=self.told_goodbye,
                  left_over=self.left_over)
        finally:
            self.done.set()
            if self.on_done is not None:
                self.on_done()

    async def aclose(self) -> None:
        """Cancel a drain still running (the server is being forced down)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class DrainingServer(uvicorn.Server):
    """uvicorn server whose SIGTERM/SIGINT first drains the calls, then stops serving."""

    def __init__(self, config: uvicorn.Config, calls: CallRegistry, timeout_s: float,
                 grace_s: float, handover: bool = False) -> None:
        super().__init__(config)
        self.drainer = Drainer(calls, timeout_s, grace_s, on_done=self._drained,
                               handover=handover)

    def _drained(self) -> None:
        self.should_exit = True

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self.drainer.started:
            if sig == signal.SIGINT:  # a second Ctrl+C: stop now
                event(log, "drain_forced", signal=name)
                self.force_exit = True
                self.should_exit = True
            return
        self.drainer.begin(reason=name)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Called inside ``serve`` with the loop running. Unlike uvicorn, never re-raise.
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        try:
            for sig in HANDLED_SIGNALS:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread: no signals here
            pass
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    async def shutdown(self, sockets: list | None = None) -> None:  # type: ignore[override]
        await self.drainer.aclose()
        await super().shutdown(sockets=sockets)
