"""``serve --workers N``: N server processes on one port, one per core.

Each worker is a full server (``voice-agent serve`` with the worker variables of
``app.runtime.workers`` set) that binds the port with ``SO_REUSEPORT``, so the kernel spreads
new connections across them. This parent only starts them, forwards SIGTERM/SIGINT (each
worker drains its own calls) and restarts a worker that died; it never touches a call.

What must agree across workers is shared: a secret for tokens (unless configured), the
database for admission slots, spent tokens and leases, and a directory where
prometheus_client's multiprocess metrics of every worker meet for one scrape.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from types import FrameType

from prometheus_client import multiprocess

from app.logs import event, get_logger
from app.runtime import workers

log = get_logger(__name__)

STARTUP_REFUSED = 2  # a worker's exit code for a configuration or start-up error
MAX_RESTARTS = 5  # within RESTART_WINDOW_S; more means something is wrong, not a one-off
RESTART_WINDOW_S = 60.0
RESTART_DELAY_S = 1.0


class Supervisor:
    def __init__(self, count: int, argv: Sequence[str]) -> None:
        self.count = count
        self.argv = list(argv)  # the worker's command line after "serve"
        self.metrics_dir = tempfile.mkdtemp(prefix="voice-agent-metrics-")
        self.env = dict(os.environ)
        self.env[workers.COUNT_ENV] = str(count)
        self.env.setdefault(workers.SECRET_ENV, secrets.token_hex(32))
        self.env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.signals: list[int] = []
        self._restarts: list[float] = []

    def _spawn(self, index: int) -> None:
        env = dict(self.env)
        env[workers.INDEX_ENV] = str(index)
        cmd = [sys.executable, "-m", "app.cli", "serve", *self.argv]
        self.procs[index] = subprocess.Popen(cmd, env=env)
        event(log, "worker_started", worker=index, pid=self.procs[index].pid)

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        self.stopping = True
        self.signals.append(sig)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(sig)  # a second Ctrl+C reaches them as a second one too

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        event(log, "workers_starting", workers=self.count)
        try:
            for index in range(self.count):
                self._spawn(index)
            return self._watch()
        finally:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _watch(self) -> int:
        worst = 0
        while self.procs:
            time.sleep(0.2)
            for index, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del self.procs[index]
                multiprocess.mark_process_dead(proc.pid, self.metrics_dir)
                if self.stopping:  # a worker replaced earlier does not count here
                    worst = max(worst, code if code > 0 else 1 if code < 0 else 0)
                    event(log, "worker_stopped", worker=index, code=code)
                    continue
                event(log, "worker_exited", level=40, worker=index, code=code)
                if code == STARTUP_REFUSED or not self._may_restart():
                    self._stop_all()
                    return STARTUP_REFUSED if code == STARTUP_REFUSED else 1
                time.sleep(RESTART_DELAY_S)
                self._spawn(index)
        return worst

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S]
        self._restarts.append(now)
        return len(self._restarts) <= MAX_RESTARTS

    def _stop_all(self) -> None:
        self.stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            proc.wait()
        self.procs.clear()
