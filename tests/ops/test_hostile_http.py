"""Hostile HTTP against a real server process: huge unsigned bodies, slow heads, slow bodies.

Each figure the issue asked for is measured and printed: the process's memory stays bounded,
every slow connection is closed, and /health keeps answering within 100 ms throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.ops.serverproc import start_server

pytestmark = pytest.mark.slow

MB = 1024 * 1024
ROUTES = ("/twilio/status", "/twilio/amd", "/twilio/recording", "/webrtc/offer", "/twilio/voice")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class HealthProbe:
    """Asks /health every 20 ms from a thread of its own (so the test's own busy loop does not
    count against the server) and keeps the slowest answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.worst_ms = 0.0
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    status = client.get(self.url + "/health").status_code
                except httpx.HTTPError as exc:
                    status = repr(exc)
                if status != 200:
                    self.failures.append(str(status))
                self.worst_ms = max(self.worst_ms, (time.perf_counter() - started) * 1000)
                self.answers += 1
                self._stop.wait(0.02)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


async def stream_body(host: str, port: int, path: str, total: int, chunked: bool) -> bytes:
    """POST ``total`` bytes as fast as the server takes them; returns the status line, read
    while still sending (the server answers 413 before the body is through)."""
    reader, writer = await asyncio.open_connection(host, port)
    status = asyncio.create_task(asyncio.wait_for(reader.readline(), 15))
    try:
        length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\n{length}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
        )
        block = b"a" * (256 * 1024)
        sent = 0
        while sent < total and not status.done():
            writer.write(block if not chunked else b"%x\r\n%s\r\n" % (len(block), block))
            await writer.drain()
            sent += len(block)
    except OSError:
        pass  # the server closed the connection on us: the status line says why
    finally:
        writer.close()
    try:
        return await status
    except OSError as exc:
        return repr(exc).encode()


async def dribble(host: str, port: int, data: bytes, every_s: float, give_up_s: float) -> float:
    """Send ``data`` one byte at a time; seconds until the server closed the connection."""
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    try:
        for byte in data:
            writer.write(bytes([byte]))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            try:
                got = await asyncio.wait_for(reader.read(4096), every_s)
            except TimeoutError:
                continue
            if got == b"" or b"HTTP/1.1 408" in got:
                return time.monotonic() - started
            if time.monotonic() - started > give_up_s:
                break
        return float("inf")
    except ConnectionError:
        return time.monotonic() - started
    finally:
        writer.close()


async def test_hostile_http_is_bounded(tmp_path) -> None:
    server = await start_server(
        tmp_path, HTTP_HEADER_TIMEOUT_S="2", HTTP_BODY_TIMEOUT_S="2",
        TWILIO_AUTH_TOKEN="t" * 32, TWILIO_ACCOUNT_SID="AC" + "0" * 32,
    )
    host, port, pid = "127.0.0.1", server.port, server.proc.pid
    try:
        before = rss_mb(pid)
        with HealthProbe(server.url) as probe:
            # 1. ten unsigned 50 MB posts: five declared, five chunked, across the routes
            statuses = await asyncio.gather(*(
                stream_body(host, port, ROUTES[i % len(ROUTES)], 50 * MB, chunked=i % 2 == 1)
                for i in range(10)
            ))
            after_bodies = rss_mb(pid)
            # 2. 150 connections sending their head a byte at a time
            head = b"POST /twilio/status HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200
            heads = await asyncio.gather(*(dribble(host, port, head, 0.25, 8) for _ in range(150)))
            # 3. 20 connections sending a declared body a byte at a time
            slow_body = (b"POST /twilio/status HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
            body_conns = [
                asyncio.open_connection(host, port) for _ in range(20)
            ]
            opened = await asyncio.gather(*body_conns)
            for _, writer in opened:
                writer.write(slow_body)
            bodies = await asyncio.gather(
                *(dribble(host, port, slow_body + b"x" * 400, 0.25, 8) for _ in range(20))
            )
            for _, writer in opened:
                writer.close()
        print(
            f"\nhostile http: rss {before:.0f} -> {after_bodies:.0f} MB after 10x50 MB posts; "
            f"slow heads closed {sum(t < 8 for t in heads)}/150 in max {max(heads):.1f} s; "
            f"slow bodies closed {sum(t < 8 for t in bodies)}/20 in max {max(bodies):.1f} s; "
            f"/health worst {probe.worst_ms:.0f} ms over {probe.answers} answers"
        )
        # 413, or a reset when the server closes with the client's bytes still unread (TCP
        # then discards the answer): either way nothing was buffered
        assert all(s.startswith((b"HTTP/1.1 413", b"ConnectionReset", b"BrokenPipe"))
               for s in statuses), statuses
        assert any(s.startswith(b"HTTP/1.1 413") for s in statuses)
        assert probe.answers > 50 and not probe.failures, probe.failures
        assert after_bodies - before < 30, "bodies must be refused, not buffered"
        assert max(heads) < 5, "slow heads are closed at HTTP_HEADER_TIMEOUT_S"
        assert max(bodies) < 5, "slow bodies are answered 408 at HTTP_BODY_TIMEOUT_S"
        assert probe.worst_ms < 100
        assert "http_head_timeout" in server.log() and "http_request_refused" in server.log()
    finally:
        await server.stop()
