"""``voice-agent serve`` as a real child process on an unused loopback port, for end-to-end tests.

Offline by construction: every provider key is removed from its environment, so it runs on the
embedded local providers; Twilio routes then serve loopback peers only (the simulator).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
_CLOUD_KEYS = ("DEEPGRAM_API_KEY", "ANTHROPIC_API_KEY", "ELEVENLABS_API_KEY", "TWILIO_AUTH_TOKEN",
               "TWILIO_ACCOUNT_SID", "SENTRY_DSN", "PUBLIC_URL", "DATABASE_URL", "API_TOKEN",
               "METRICS_TOKEN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    proc: asyncio.subprocess.Process
    port: int
    log_path: Path
    metrics_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def wait(self, within: float) -> int | None:
        """Exit code, or None if it is still running after ``within`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), within)
        return self.proc.returncode

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.send_signal(signal.SIGINT)  # twice: skip the drain
            if await self.wait(15) is None:
                self.proc.kill()
                await self.wait(5)


async def run_to_exit(tmp_path: Path, within: float = 120, **env: str) -> tuple[int, str]:
    """Run ``serve`` expecting it to refuse to start: (exit code, everything it printed)."""
    child_env = {k: v for k, v in os.environ.items() if k not in _CLOUD_KEYS}
    child_env.update(HOST="127.0.0.1", WORKERS="1",
                     DATABASE_URL=f"sqlite:///{tmp_path / 'calls.db'}",
                     METRICS_PORT=str(free_port()), PYTHONUNBUFFERED="1")
    child_env.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "serve", "--port", str(free_port()),
        cwd=tmp_path, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


async def start_server(tmp_path: Path, **env: str) -> ServerProcess:
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if k not in _CLOUD_KEYS}
    child_env.update(
        HOST="127.0.0.1",
        WORKERS="1",  # one process unless a test asks for more
        LOG_LEVEL="info",
        DATABASE_URL=f"sqlite:///{tmp_path / 'calls.db'}",
        METRICS_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    child_env.update(env)
    log_path = tmp_path / f"server-{port}.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.cli", "serve", "--port", str(port),
            cwd=tmp_path, env=child_env, stdout=log_fd, stderr=subprocess.STDOUT,
        )
    finally:
        os.close(log_fd)
    server = ServerProcess(proc, port, log_path)
    server.metrics_port = int(child_env["METRICS_PORT"])
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(server.url + "/health")).status_code == 200:
                    return server
            await asyncio.sleep(0.2)
    await server.stop()
    raise RuntimeError(f"server not healthy within 120 s:\n{server.log()[-3000:]}")
