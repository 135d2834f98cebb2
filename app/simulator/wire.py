"""Media Streams messages as Twilio writes them, and checks on what the server sends back.

Pure: strings in, strings or typed events out. Twilio numbers every message after
``connected`` with a string ``sequenceNumber``; media frames carry a string ``chunk`` (from 1)
and ``timestamp`` (ms since the stream started).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FRAME_MS = 20
FRAME_BYTES = 160  # 20 ms of 8 kHz µ-law, what Twilio sends per media message
MULAW_SILENCE = b"\xff"  # µ-law code of a zero sample


def new_sid(prefix: str) -> str:
    """A Twilio-shaped id: two letters and 32 hex digits (``CA…`` call, ``MZ…`` stream)."""
    return prefix + secrets.token_hex(16)


class TwilioMessages:
    """Builds the messages one Twilio media stream sends, in order, with its counters."""

    def __init__(
        self,
        account_sid: str,
        call_sid: str,
        stream_sid: str,
        parameters: Mapping[str, str] | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.parameters = dict(parameters or {})
        self._seq = 0
        self._chunk = 0

    def _next(self) -> str:
        self._seq += 1
        return str(self._seq)

    def connected(self) -> str:
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self) -> str:
        return json.dumps(
            {
                "event": "start",
                "sequenceNumber": self._next(),
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": self.parameters,
                    "mediaFormat": {
                        "encoding": "audio/x-mulaw",
                        "sampleRate": 8000,
                        "channels": 1,
                    },
                },
                "streamSid": self.stream_sid,
            }
        )

    def media(self, payload: bytes) -> str:
        timestamp = self._chunk * FRAME_MS
        self._chunk += 1
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": self._next(),
                "media": {
                    "track": "inbound",
                    "chunk": str(self._chunk),
                    "timestamp": str(timestamp),
                    "payload": base64.b64encode(payload).decode("ascii"),
                },
                "streamSid": self.stream_sid,
            }
        )

    def mark(self, name: str) -> str:
        return json.dumps(
            {
                "event": "mark",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def dtmf(self, digit: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": self._next(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def stop(self) -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }
        )


# --------------------------------------------------------------------------- server -> Twilio


class ProtocolViolation(ValueError):
    """A server message Twilio would reject. ``kind`` is a short stable code for tests."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class AgentMedia:
    audio: bytes  # raw µ-law


@dataclass(frozen=True, slots=True)
class AgentMark:
    name: str


@dataclass(frozen=True, slots=True)
class AgentClear:
    pass


ServerEvent = AgentMedia | AgentMark | AgentClear


def parse_server_message(message: str | bytes, stream_sid: str) -> ServerEvent:
    """Check one WebSocket message from the server; raise ``ProtocolViolation`` if Twilio
    would not accept it."""
    if not isinstance(message, str):
        # Twilio answers a binary frame with error 31950 and ignores it.
        raise ProtocolViolation("binary_frame", f"binary frame of {len(message)} bytes")
    try:
        data: Any = json.loads(message)
    except ValueError:
        raise ProtocolViolation("not_json", f"text frame is not JSON: {message[:60]!r}") from None
    if not isinstance(data, dict):
        raise ProtocolViolation("not_object", f"JSON message is a {type(data).__name__}")
    kind = data.get("event")
    if kind not in {"media", "mark", "clear"}:
        raise ProtocolViolation("unknown_event", f"event {kind!r} is not media, mark or clear")
    if data.get("streamSid") != stream_sid:
        raise ProtocolViolation(
            "wrong_stream_sid", f"{kind} for streamSid {data.get('streamSid')!r}"
        )
    if kind == "clear":
        return AgentClear()
    if kind == "mark":
        mark = data.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str) or not name:
            raise ProtocolViolation("bad_mark", "mark without a name")
        return AgentMark(name)
    media = data.get("media")
    payload = media.get("payload") if isinstance(media, dict) else None
    if not isinstance(payload, str) or not payload:
        raise ProtocolViolation("bad_media", "media without a payload")
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolViolation("bad_media", "payload is not valid base64") from None
    if not audio:
        raise ProtocolViolation("bad_media", "empty payload")
    if audio[:4] == b"RIFF":
        # A WAV header played as µ-law is a loud click: Twilio wants raw samples.
        raise ProtocolViolation("bad_media", "payload carries a WAV header, not raw µ-law")
    return AgentMedia(audio)
