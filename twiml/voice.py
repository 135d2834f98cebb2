"""TwiML answers to Twilio's voice webhook, built with the twilio package's builders."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from twilio.twiml.voice_response import Connect, VoiceResponse

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def connect_stream(ws_url: str, parameters: Mapping[str, str] | None = None) -> str:
    """``<Connect><Stream>`` to our media WebSocket, then ``<Hangup/>``.

    ``<Connect>`` (not ``<Start>``) makes the stream bidirectional. Twilio drops a query string
    from the stream URL, so per-call data goes in ``<Parameter>`` children, which come back in
    ``start.customParameters``. Twilio runs the next verb only after we close the socket;
    an explicit ``<Hangup/>`` makes that end of the call deliberate. ``ws://`` is accepted for
    local tests only: Twilio itself requires ``wss://``.
    """
    parts = urlsplit(ws_url)
    if parts.scheme not in {"wss", "ws"} or not parts.netloc:
        raise ValueError(f"stream URL must be wss://host/path, got scheme {parts.scheme!r}")
    if parts.query or parts.fragment:
        raise ValueError("stream URL must not carry a query or fragment (Twilio drops it)")
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=ws_url)
    for name, value in (parameters or {}).items():
        if not name:
            raise ValueError("stream parameter names must not be empty")
        stream.parameter(name=name, value=value)
    response.append(connect)
    response.hangup()
    return str(response)


def reject_busy(message: str, fallback_number: str | None = None) -> str:
    """Admission overflow: a polite ``<Say>``, then ``<Dial>`` a fallback line or ``<Hangup/>``."""
    if fallback_number is not None and not _E164.match(fallback_number):
        raise ValueError("fallback number must be in E.164 form (+15551234567)")
    response = VoiceResponse()
    response.say(message)
    if fallback_number:
        response.dial(fallback_number)
    else:
        response.hangup()
    return str(response)
