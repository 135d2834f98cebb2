"""A fake Sentry ingest endpoint on 127.0.0.1: accepts envelopes and keeps their raw text.

DSN: ``http://<key>@127.0.0.1:<port>/<project>``. The SDK posts to
``/api/<project>/envelope/``, gzip-compressed; we keep the decompressed body so a test can
search everything that would have left the process.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeSentry:
    def __init__(self, key: str = "publickey0123456789", project: int = 1) -> None:
        self.key = key
        self.project = project
        self.bodies: list[str] = []
        self.received = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def dsn(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{self.key}@{host}:{port}/{self.project}"

    def events(self) -> list[dict[str, Any]]:
        """Items of type ``event`` in the envelopes received so far."""
        found = []
        for body in self.bodies:
            lines = body.split("\n")
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if header.strip() and json.loads(header).get("type") == "event":
                    found.append(json.loads(payload))
        return found

    def start(self) -> FakeSentry:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    raw = gzip.decompress(raw)
                elif encoding == "deflate":
                    raw = zlib.decompress(raw)
                ok = self.path == f"/api/{fake.project}/envelope/" and fake.key in (
                    self.headers.get("X-Sentry-Auth", "")
                )
                if ok:
                    fake.bodies.append(raw.decode("utf-8", "replace"))
                    fake.received.set()
                self.send_response(200 if ok else 403)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeSentry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
