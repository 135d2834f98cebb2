"""The server under test as its own process: ``voice-agent serve`` pinned to its CPUs, with its
CPU time and resident memory read from ``/proc`` (Linux); under ``--workers N`` the parent's and
its workers' together."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(
        self,
        env: dict[str, str],
        workdir: Path,
        cpus: set[int] | None,
        profile: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.workdir = workdir
        self.cpus = cpus
        self.profile = profile
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable]
        if self.profile is not None:
            cmd += ["-m", "cProfile", "-o", str(self.profile)]
        cmd += ["-m", "app.cli", "serve", "--port", str(self.port)]
        cpus = self.cpus

        def pin() -> None:  # in the child, before exec: the server gets exactly these CPUs
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=pin,
            )  # fmt: skip

    async def wait_ready(self, within_s: float = 90.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
            while loop.time() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited ({self.proc.returncode}): {self.tail()}")
                try:
                    if (await client.get(self.url + "/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"server not ready within {within_s:g} s: {self.tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        """The server's process and, under ``--workers N``, its workers."""
        out, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                try:
                    todo += [int(c) for c in task.read_text().split()]
                except OSError:
                    pass
        return out

    def cpu_seconds(self) -> float:
        """User + system time of the server's processes (all their threads) that are alive."""
        total = 0.0
        for pid in self.pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK
        return total

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
            except OSError:
                continue
        return total

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, within_s: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)  # drains (no calls left), then exits
        try:
            return self.proc.wait(within_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
