"""The Twilio REST side of outbound calls: place, redirect to TwiML, hang up, fetch.

The twilio package's client is synchronous, so each request runs in a worker thread and the
event loop never blocks. ``TWILIO_API_BASE_URL`` points it at staging or a local fake.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import requests
from twilio.base.exceptions import TwilioRestException

from app.logs import register_secret
from telephony.rest import rest_client

ErrorKind = Literal["throttled", "number", "config", "ambiguous", "refused"]

# Refusals about the number itself (invalid To, no geo permission, unreachable type): dialling
# it again will not help.
_NUMBER_CODES = {13223, 13224, 13225, 13226, 21211, 21214, 21215, 21216, 21217, 21401, 21407}
# Our own set-up is wrong (credentials, caller id): every call would fail the same way.
_CONFIG_CODES = {20003, 20404, 21201, 21205, 21210, 21212, 21213}


class DialError(Exception):
    """``calls.create`` (or another REST call) did not succeed. ``kind``:

    throttled: HTTP 429 / 20429, nothing was created; back off and try again.
    number: the number cannot be called; do not retry it.
    config: our credentials or caller id are wrong; stop dialling until fixed.
    ambiguous: a network error or server error; the call may or may not exist.
    refused: any other refusal; nothing was created.
    """

    def __init__(
        self, kind: ErrorKind, message: str, status: int | None = None, code: int | None = None
    ):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.code = code

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.code or self.status or '-'}"


@dataclass(frozen=True, slots=True)
class CallState:
    sid: str
    status: str
    answered_by: str | None
    duration_s: float | None


def classify(exc: TwilioRestException) -> DialError:
    code = int(exc.code) if isinstance(exc.code, int | str) and str(exc.code).isdigit() else None
    status = exc.status
    if status == 429 or code == 20429:
        kind: ErrorKind = "throttled"
    elif code in _NUMBER_CODES:
        kind = "number"
    elif code in _CONFIG_CODES or status in (401, 403):
        kind = "config"
    elif status >= 500:
        kind = "ambiguous"
    else:
        kind = "refused"
    return DialError(kind, f"twilio {status} {code or ''}".strip(), status, code)


class TwilioDialer:
    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        api_base_url: str | None = None,
        timeout_s: float = 15.0,
    ) -> None:
        register_secret(auth_token)
        self.account_sid = account_sid
        self.client = rest_client(
            account_sid, auth_token, base_url=api_base_url, timeout_s=timeout_s
        )

    async def create(
        self,
        *,
        to: str,
        from_: str,
        url: str,
        status_callback: str,
        amd_callback: str,
        ring_timeout_s: int,
        time_limit_s: int | None = None,
    ) -> str:
        def _create() -> str:
            call = self.client.calls.create(
                to=to,
                from_=from_,
                url=url,
                method="POST",
                status_callback=status_callback,
                status_callback_method="POST",
                status_callback_event=["initiated", "ringing", "answered", "completed"],
                machine_detection="DetectMessageEnd",
                async_amd="true",
                async_amd_status_callback=amd_callback,
                async_amd_status_callback_method="POST",
                timeout=ring_timeout_s,
                **({"time_limit": time_limit_s} if time_limit_s else {}),
            )
            return str(call.sid)

        return await self._run(_create)

    async def play_and_hang_up(self, sid: str, twiml: str) -> None:
        await self._run(lambda: self.client.calls(sid).update(twiml=twiml))

    async def hang_up(self, sid: str) -> None:
        await self._run(lambda: self.client.calls(sid).update(status="completed"))

    async def fetch(self, sid: str) -> CallState:
        def _fetch() -> CallState:
            call = self.client.calls(sid).fetch()
            duration = float(call.duration) if call.duration not in (None, "") else None
            return CallState(
                sid=sid,
                status=str(call.status),
                answered_by=call.answered_by or None,
                duration_s=duration,
            )

        return await self._run(_fetch)

    async def _run(self, fn):  # type: ignore[no-untyped-def]
        try:
            return await asyncio.to_thread(fn)
        except TwilioRestException as exc:
            raise classify(exc) from None
        except requests.RequestException as exc:
            raise DialError("ambiguous", f"network: {type(exc).__name__}") from None
