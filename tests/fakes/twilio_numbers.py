"""A wire-compatible fake of Twilio's IncomingPhoneNumbers REST API on 127.0.0.1.

Enough for the real ``twilio`` client: list numbers filtered by ``PhoneNumber`` (one page),
fetch one, and update its voice webhook fields. Requests need HTTP Basic auth with the
account SID and auth token, as the real API does; failures answer Twilio's JSON error shape.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_ACCOUNT = re.compile(r"^/2010-04-01/Accounts/(AC\w+)\.json$")
_LIST = re.compile(r"^/2010-04-01/Accounts/(AC\w+)/IncomingPhoneNumbers\.json$")
_ONE = re.compile(r"^/2010-04-01/Accounts/(AC\w+)/IncomingPhoneNumbers/(PN\w+)\.json$")

# form parameter -> resource field, for the fields a voice set-up touches
UPDATABLE = {
    "VoiceUrl": "voice_url",
    "VoiceMethod": "voice_method",
    "VoiceFallbackUrl": "voice_fallback_url",
    "VoiceFallbackMethod": "voice_fallback_method",
    "StatusCallback": "status_callback",
    "StatusCallbackMethod": "status_callback_method",
    "VoiceApplicationSid": "voice_application_sid",
    "FriendlyName": "friendly_name",
}
METHODS = {"voice_method", "voice_fallback_method", "status_callback_method"}


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]


@dataclass
class FakeTwilioNumbers:
    account_sid: str = "AC" + "1" * 32
    auth_token: str = "fake-auth-token-0123456789"
    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)  # by PN sid
    requests: list[Seen] = field(default_factory=list)
    api_keys: dict[str, str] = field(default_factory=dict)  # SK... -> secret, this account's
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def add_number(self, e164: str, **fields: Any) -> dict[str, Any]:
        sid = f"PN{len(self.numbers) + 1:032x}"
        record: dict[str, Any] = {
            "sid": sid,
            "account_sid": self.account_sid,
            "phone_number": e164,
            "friendly_name": e164,
            "voice_url": "https://demo.twilio.com/welcome/voice/",
            "voice_method": "POST",
            "voice_fallback_url": None,
            "voice_fallback_method": "POST",
            "status_callback": "",
            "status_callback_method": "POST",
            "voice_application_sid": None,
            "trunk_sid": None,
            "voice_receive_mode": "voice",
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/IncomingPhoneNumbers/{sid}.json",
        }
        record.update(fields)
        self.numbers[sid] = record
        return record

    @property
    def base_url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeTwilioNumbers:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

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

    def __enter__(self) -> FakeTwilioNumbers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ request handling

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length).decode() if length else ""
        form = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
        self.requests.append(Seen(method, parts.path, query, form))
        if not self._authorised(h.headers.get("Authorization", "")):
            return _error(h, 401, 20003, "Authenticate")
        if (m := _ACCOUNT.match(parts.path)) and method == "GET":
            if m.group(1) != self.account_sid:
                return _error(h, 404, 20404, "The requested resource was not found")
            return _json(h, 200, {"sid": self.account_sid, "friendly_name": "Test account",
                                  "status": "active", "type": "Full"})
        if (m := _LIST.match(parts.path)) and method == "GET":
            if m.group(1) != self.account_sid:
                return _error(h, 404, 20404, "The requested resource was not found")
            return self._list(h, parts.path, query)
        if m := _ONE.match(parts.path):
            record = self.numbers.get(m.group(2))
            if m.group(1) != self.account_sid or record is None:
                return _error(h, 404, 20404, "The requested resource was not found")
            if method == "POST":
                return self._update(h, record, form)
            return _json(h, 200, record)
        return _error(h, 404, 20404, "The requested resource was not found")

    def _authorised(self, header: str) -> bool:
        pairs = [(self.account_sid, self.auth_token), *self.api_keys.items()]
        return any(
            header == "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
            for user, secret in pairs
        )

    def _list(self, h: BaseHTTPRequestHandler, path: str, query: dict[str, str]) -> None:
        wanted = query.get("PhoneNumber")
        rows = [n for n in self.numbers.values() if wanted in (None, n["phone_number"])]
        size = int(query.get("PageSize", "50"))
        _json(h, 200, {
            "incoming_phone_numbers": rows[:size],
            "page": 0,
            "page_size": size,
            "start": 0,
            "end": max(len(rows[:size]) - 1, 0),
            "first_page_uri": path,
            "next_page_uri": None,
            "previous_page_uri": None,
            "uri": path,
        })

    def _update(self, h: BaseHTTPRequestHandler, record: dict[str, Any],
                form: dict[str, str]) -> None:
        unknown = sorted(set(form) - set(UPDATABLE))
        if unknown:
            return _error(h, 400, 20001, f"Unsupported parameter(s) in this fake: {unknown}")
        changes = {UPDATABLE[k]: v for k, v in form.items()}
        for key in METHODS & changes.keys():
            if changes[key].upper() not in {"GET", "POST"}:
                return _error(h, 400, 20001, f"{key} must be GET or POST")
        for key in ("voice_url", "status_callback", "voice_fallback_url"):
            if changes.get(key) and not changes[key].startswith(("http://", "https://")):
                return _error(h, 400, 21502, "Invalid Url")
        if changes.get("voice_application_sid") == "":
            changes["voice_application_sid"] = None
        record.update(changes)
        _json(h, 200, record)


def _json(h: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def _error(h: BaseHTTPRequestHandler, status: int, code: int, message: str) -> None:
    _json(h, status, {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    })
