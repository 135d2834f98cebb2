"""TwiML for transfers and keypad output, built with the twilio package's builders.

With ``<Connect><Stream>``, replacing a live call's TwiML (REST ``calls(sid).update``) ends the
media stream: Twilio stops it and runs the new document. That is how a call leaves the agent
for a human, and how keys are pressed on an IVR (``<Play digits>``) before the stream is
reconnected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_DIGITS = re.compile(r"^[0-9*#wW]{1,64}$")


def _number(value: str) -> str:
    if not _E164.match(value):
        raise ValueError("transfer numbers must be E.164 (+15551234567)")
    return value


def cold_transfer(number: str, say: str | None = None, ring_timeout_s: int = 30) -> str:
    """Redirect the call: an optional line, then ``<Dial>`` the colleague."""
    response = VoiceResponse()
    if say:
        response.say(say)
    response.dial(_number(number), timeout=ring_timeout_s)
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
    digits: str, ws_url: str, parameters: Mapping[str, str] | None = None
) -> str:
    """Press keys on the line (``w`` = wait 0.5 s), then reconnect the media stream."""
    if not _DIGITS.match(digits):
        raise ValueError("digits must be 0-9, *, # or w (wait), at most 64")
    response = VoiceResponse()
    response.play(digits=digits.lower())
    connect = Connect()
    stream = connect.stream(url=ws_url)
    for name, value in (parameters or {}).items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    response.hangup()
    return str(response)


def apology(message: str) -> str:
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)
