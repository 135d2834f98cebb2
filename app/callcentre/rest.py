"""Live-call control through Twilio's REST API: new TwiML, recordings, a colleague's leg.

The twilio package's client is synchronous, so each request runs in a worker thread and the
event loop never blocks. ``TWILIO_API_BASE_URL`` points it at staging or a local fake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from twilio.base.exceptions import TwilioRestException

from app.config import Settings
from app.logs import register_secret
from telephony.rest import rest_client

T = TypeVar("T")
HTTP_TIMEOUT_S = 10.0


class CallControlError(Exception):
    """A REST request failed. The message holds the HTTP status and Twilio code only."""

    def __init__(self, message: str, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class CallControl:
    def __init__(self, account_sid: str, auth_token: str, api_base_url: str | None = None):
        register_secret(auth_token)
        self.client = rest_client(
            account_sid, auth_token, base_url=api_base_url, timeout_s=HTTP_TIMEOUT_S
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> CallControl | None:
        t = settings.twilio
        if not t.account_sid or not t.auth_token:
            return None
        return cls(t.account_sid, t.auth_token, t.api_base_url)

    async def redirect(self, call_sid: str, twiml: str) -> None:
        """Replace the call's TwiML (ends a ``<Connect><Stream>``)."""
        await self._run(lambda: self.client.calls(call_sid).update(twiml=twiml))

    async def start_recording(
        self, call_sid: str, callback_url: str | None, channels: str = "dual"
    ) -> str:
        def create() -> str:
            kwargs: dict[str, Any] = {"recording_channels": channels}
            if callback_url:
                kwargs.update(
                    recording_status_callback=callback_url,
                    recording_status_callback_method="POST",
                    recording_status_callback_event=["completed", "absent"],
                )
            return str(self.client.calls(call_sid).recordings.create(**kwargs).sid)

        return await self._run(create)

    async def dial(self, to: str, from_: str, twiml: str, timeout_s: int) -> str:
        return await self._run(
            lambda: str(
                self.client.calls.create(to=to, from_=from_, twiml=twiml, timeout=timeout_s).sid
            )
        )

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except TwilioRestException as exc:
            code = exc.code if isinstance(exc.code, int) else None
            message = f"twilio {exc.status} {code or ''}".strip()
            raise CallControlError(message, exc.status, code) from None
        except requests.RequestException as exc:
            raise CallControlError(f"network: {type(exc).__name__}") from None
