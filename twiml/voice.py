"""Every TwiML document the server answers or sends, built with the twilio package's builders.

Webhook answers (the stream, a busy line, an apology) and live-call updates (a transfer, keys
pressed on an IVR, a voicemail message). With ``<Connect><Stream>``, replacing a live call's
TwiML (REST ``calls(sid).update``) ends the media stream: Twilio stops it and runs the new
document. That is how a call leaves the agent for a human, and how keys are pressed on an IVR
(``<Play digits>``) before the stream is reconnected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

from telephony.numbers import is_e164

_DIGITS = re.compile(r"^[0-9*#wW]{1,64}$")


def _number(value: str, what: str = "numbers") -> str:
    if not is_e164(value):
        raise ValueError(f"{what} must be in E.164 form (+15551234567)")
    return value


def _stream(
    ws_url: str, parameters: Mapping[str, str] | None, action: str | None = None
) -> Connect:
    """``<Connect><Stream url>`` with its ``<Parameter>`` children (Twilio drops a query
    string from the stream URL, so per-call data travels here)."""
    parts = urlsplit(ws_url)
    if parts.scheme not in {"wss", "ws"} or not parts.netloc:
        raise ValueError(f"stream URL must be wss://host/path, got scheme {parts.scheme!r}")
    if parts.query or parts.fragment:
        raise ValueError("stream URL must not carry a query or fragment (Twilio drops it)")
    if action is not None and urlsplit(action).scheme not in {"https", "http"}:
        raise ValueError("the <Connect action> must be an http(s) URL")
    connect = Connect(action=action, method="POST") if action else Connect()
    stream = connect.stream(url=ws_url)
    for name, value in (parameters or {}).items():
        if not name:
            raise ValueError("stream parameter names must not be empty")
        stream.parameter(name=name, value=value)
    return connect


def connect_stream(
    ws_url: str, parameters: Mapping[str, str] | None = None, action: str | None = None
) -> str:
    """``<Connect><Stream>`` to our media WebSocket, then ``<Hangup/>``.

    ``<Connect>`` (not ``<Start>``) makes the stream bidirectional; its parameters come back in
    ``start.customParameters``. Twilio runs the next verb only after we close the socket; an
    explicit ``<Hangup/>`` makes that end of the call deliberate. ``ws://`` is accepted for
    local tests only: Twilio itself requires ``wss://``.

    With ``action``, Twilio requests that URL when the stream ends, however it ended, and runs
    the TwiML it answers instead of the ``<Hangup/>``: a call whose stream dropped (a crash, a
    deploy) is connected again from there.
    """
    response = VoiceResponse()
    response.append(_stream(ws_url, parameters, action))
    response.hangup()
    return str(response)


def reject_busy(message: str, fallback_number: str | None = None) -> str:
    """Admission overflow: a polite ``<Say>``, then ``<Dial>`` a fallback line or ``<Hangup/>``."""
    if fallback_number is not None:
        _number(fallback_number, "fallback number")
    response = VoiceResponse()
    response.say(message)
    if fallback_number:
        response.dial(fallback_number)
    else:
        response.hangup()
    return str(response)


def hang_up() -> str:
    """The end of the call: a stream's ``action`` answer when the call was over anyway."""
    response = VoiceResponse()
    response.hangup()
    return str(response)


def say_and_hang_up(message: str) -> str:
    """An apology, or a voicemail message after the beep, then the end of the call."""
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)


def cold_transfer(number: str, say: str | None = None, ring_timeout_s: int = 30) -> str:
    """Redirect the call: an optional line, then ``<Dial>`` the colleague."""
    response = VoiceResponse()
    if say:
        response.say(say)
    response.dial(_number(number, "transfer numbers"), timeout=ring_timeout_s)
    return str(response)


def conference_hold(room: str, hold_music_url: str | None = None) -> str:
    """Warm transfer, caller side: wait in a conference (music) until the colleague joins;
    the call ends when the colleague hangs up."""
    response = VoiceResponse()
    dial = Dial()
    dial.conference(
        room,
        start_conference_on_enter=False,
        end_conference_on_exit=False,
        wait_url=hold_music_url or None,
        beep=False,
    )
    response.append(dial)
    return str(response)


def conference_brief(room: str, brief: str) -> str:
    """Warm transfer, colleague side: hear the brief first, then join and start the bridge."""
    response = VoiceResponse()
    response.say(brief)
    dial = Dial()
    dial.conference(room, start_conference_on_enter=True, end_conference_on_exit=True, beep=False)
    response.append(dial)
    return str(response)


def play_digits_then_stream(
    digits: str,
    ws_url: str,
    parameters: Mapping[str, str] | None = None,
    action: str | None = None,
) -> str:
    """Press keys on the line (``w`` = wait 0.5 s), then reconnect the media stream (with the
    same ``<Connect action>`` as every stream)."""
    if not _DIGITS.match(digits):
        raise ValueError("digits must be 0-9, *, # or w (wait), at most 64")
    response = VoiceResponse()
    response.play(digits=digits.lower())
    response.append(_stream(ws_url, parameters, action))
    response.hangup()
    return str(response)
