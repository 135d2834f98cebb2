"""Twilio Media Streams protocol, sans-I/O: text frames in, typed events out, frames to send out.

One ``MediaStream`` per WebSocket. It is an explicit state machine::

    AWAITING_CONNECTED --connected--> AWAITING_START --start--> STREAMING --stop--> STOPPED

Any frame that breaks the order or the documented shape raises ``ProtocolError`` naming the
violation ("expected start, got media") and moves the machine to FAILED; the transport then
closes that one stream. Nothing here awaits, reads a clock or touches a socket.

Inbound (Twilio -> us): ``sequenceNumber``, ``chunk`` and ``timestamp`` arrive as strings;
``media.payload`` is base64 µ-law 8 kHz of any length (20 ms is usual, never promised).

Outbound framing (us -> Twilio): each ``AudioSink.send_audio`` chunk is base64-encoded exactly
once and sent as one ``media`` frame, split only when it exceeds ``max_outbound_bytes``
(default 1 s of audio) so that no single WebSocket message grows unbounded. Chunks are never
coalesced or re-sliced to 20 ms: Twilio buffers any length and plays in order, coalescing would
add latency and slicing would only multiply frames. The JSON envelope around the payload is
built once per stream (streamSid is fixed), so a frame costs one base64 pass and one string join.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

# A µ-law byte is one 8 kHz sample: 8000 bytes is one second of audio.
MULAW_BYTES_PER_SECOND = 8000
DEFAULT_MAX_FRAME_CHARS = 64 * 1024  # one inbound text frame; a 1 s media frame is ~11 KiB
DEFAULT_MAX_PAYLOAD_BYTES = 2 * MULAW_BYTES_PER_SECOND  # one inbound media payload (2 s)
DEFAULT_MAX_OUTBOUND_BYTES = MULAW_BYTES_PER_SECOND  # one outbound media frame (1 s)
MAX_MARK_NAME_CHARS = 256
MAX_CUSTOM_PARAMETERS = 32

_SID = re.compile(r"^[A-Z]{2}[0-9a-fA-F]{32}$")  # CA..., MZ..., AC...: prefix + 32 hex
_DTMF_DIGITS = frozenset("0123456789*#ABCD")


class ProtocolError(ValueError):
    """The peer broke the Media Streams protocol. The message names the violation."""


class State(enum.Enum):
    AWAITING_CONNECTED = "awaiting connected"
    AWAITING_START = "awaiting start"
    STREAMING = "streaming"
    STOPPED = "stopped"
    FAILED = "failed"


# --------------------------------------------------------------------------- inbound events


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class MediaFormat:
    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class Start:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    media_format: MediaFormat
    custom_parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Media:
    sequence_number: int
    track: str
    chunk: int
    timestamp_ms: int  # since the stream started
    payload: bytes  # raw µ-law 8 kHz mono, no header


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence_number: int
    track: str
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    """Echo of a mark we sent: playback reached it, or a ``clear`` dropped it."""

    sequence_number: int
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    sequence_number: int
    account_sid: str
    call_sid: str


StreamEvent = Connected | Start | Media | Dtmf | Mark | Stop

_EXPECTED = {
    State.AWAITING_CONNECTED: "connected",
    State.AWAITING_START: "start",
}
_KNOWN_EVENTS = frozenset({"connected", "start", "media", "dtmf", "mark", "stop"})


# --------------------------------------------------------------------------- the machine


class MediaStream:
    """Protocol state of one Twilio Media Streams WebSocket."""

    def __init__(
        self,
        max_frame_chars: int = DEFAULT_MAX_FRAME_CHARS,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_outbound_bytes: int = DEFAULT_MAX_OUTBOUND_BYTES,
    ) -> None:
        if max_outbound_bytes <= 0:
            raise ValueError("max_outbound_bytes must be positive")
        self.max_frame_chars = max_frame_chars
        self.max_payload_bytes = max_payload_bytes
        self.max_outbound_bytes = max_outbound_bytes
        self.state = State.AWAITING_CONNECTED
        self.start: Start | None = None
        self.last_sequence = 0
        self._media_prefix = ""
        self._media_suffix = '"}}'

    # ---------------------------------------------------------------- inbound

    @property
    def stream_sid(self) -> str | None:
        return self.start.stream_sid if self.start else None

    def receive_bytes(self, data: bytes) -> NoReturn:
        """Twilio only sends text frames; a binary frame is a protocol error."""
        self._fail(f"binary frame of {len(data)} bytes in state {self.state.value}")

    def receive(self, text: str) -> StreamEvent:
        """Parse one text frame and advance the state machine."""
        if self.state is State.FAILED:
            raise ProtocolError("stream already failed")
        if len(text) > self.max_frame_chars:
            self._fail(f"frame of {len(text)} chars exceeds {self.max_frame_chars}")
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError) as exc:
            self._fail(f"frame is not JSON ({exc.__class__.__name__})")
        if not isinstance(msg, dict):
            self._fail(f"frame is a JSON {type(msg).__name__}, not an object")
        name = msg.get("event")
        if not isinstance(name, str):
            self._fail("frame has no string 'event'")
        if name not in _KNOWN_EVENTS:
            self._fail(f"unknown event {_clip(name)!r}")
        expected = _EXPECTED.get(self.state)
        if expected is not None and name != expected:
            self._fail(f"expected {expected}, got {name}")
        if self.state is State.STOPPED:
            self._fail(f"{name} after stop")
        if self.state is State.STREAMING and name in _EXPECTED.values():
            self._fail(f"second {name} while streaming")
        try:
            return self._dispatch(name, msg)
        except ProtocolError:
            self.state = State.FAILED
            raise

    def _dispatch(self, name: str, msg: dict[str, Any]) -> StreamEvent:
        if name == "connected":
            self.state = State.AWAITING_START
            return Connected(
                protocol=_str(msg, "protocol", name), version=_str(msg, "version", name)
            )
        if name == "start":
            # start.streamSid is authoritative; the top-level copy must agree when present.
            start = self._parse_start(msg)
            top = msg.get("streamSid")
            if top is not None and top != start.stream_sid:
                raise ProtocolError("start: top-level streamSid differs from start.streamSid")
            self.start = start
            self.state = State.STREAMING
            self._media_prefix = (
                '{"event":"media","streamSid":'
                + json.dumps(start.stream_sid)
                + ',"media":{"payload":"'
            )
            return start
        # Every message after start belongs to the same stream and counts up.
        self._check_stream_sid(msg, name)
        seq = self._sequence(msg, name)
        if name == "media":
            return self._parse_media(msg, seq)
        if name == "dtmf":
            body = _obj(msg, "dtmf", name)
            digit = _str(body, "digit", "dtmf")
            if digit not in _DTMF_DIGITS:
                raise ProtocolError(f"dtmf: invalid digit {_clip(digit)!r}")
            return Dtmf(seq, track=_str(body, "track", "dtmf", required=False), digit=digit)
        if name == "mark":
            body = _obj(msg, "mark", name)
            mark_name = _str(body, "name", "mark")
            if len(mark_name) > MAX_MARK_NAME_CHARS:
                raise ProtocolError(f"mark: name longer than {MAX_MARK_NAME_CHARS} chars")
            return Mark(seq, mark_name)
        # stop
        body = _obj(msg, "stop", name)
        call_sid = _str(body, "callSid", "stop")
        assert self.start is not None
        if call_sid != self.start.call_sid:
            raise ProtocolError("stop: callSid differs from the one in start")
        self.state = State.STOPPED
        return Stop(seq, account_sid=_str(body, "accountSid", "stop"), call_sid=call_sid)

    def _parse_start(self, msg: dict[str, Any]) -> Start:
        seq = _int_str(msg, "sequenceNumber", "start", required=False)
        if seq is not None:
            self.last_sequence = seq
        body = _obj(msg, "start", "start")
        stream_sid = _sid(body, "streamSid")
        call_sid = _sid(body, "callSid")
        account_sid = _sid(body, "accountSid")
        tracks = body.get("tracks", [])
        if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
            raise ProtocolError("start: tracks must be a list of strings")
        fmt = _obj(body, "mediaFormat", "start")
        media_format = MediaFormat(
            encoding=_str(fmt, "encoding", "start.mediaFormat"),
            sample_rate=_int(fmt, "sampleRate", "start.mediaFormat"),
            channels=_int(fmt, "channels", "start.mediaFormat"),
        )
        # Twilio documents this one format for Media Streams; anything else we cannot play.
        if (media_format.encoding, media_format.sample_rate, media_format.channels) != (
            "audio/x-mulaw",
            8000,
            1,
        ):
            raise ProtocolError(
                f"start: unsupported media format {_clip(media_format.encoding)}/"
                f"{media_format.sample_rate}/{media_format.channels}"
            )
        params = body.get("customParameters", {})
        if not isinstance(params, dict):
            raise ProtocolError("start: customParameters must be an object")
        if len(params) > MAX_CUSTOM_PARAMETERS:
            raise ProtocolError(f"start: more than {MAX_CUSTOM_PARAMETERS} customParameters")
        if not all(isinstance(v, str) for v in params.values()):
            raise ProtocolError("start: customParameters values must be strings")
        return Start(
            sequence_number=seq or 0,
            stream_sid=stream_sid,
            account_sid=account_sid,
            call_sid=call_sid,
            tracks=tuple(tracks),
            media_format=media_format,
            custom_parameters=dict(params),
        )

    def _parse_media(self, msg: dict[str, Any], seq: int) -> Media:
        body = _obj(msg, "media", "media")
        encoded = _str(body, "payload", "media")
        # base64 inflates by 4/3: reject before decoding anything oversized.
        if len(encoded) > (self.max_payload_bytes + 2) // 3 * 4:
            raise ProtocolError(f"media: payload exceeds {self.max_payload_bytes} bytes")
        try:
            payload = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("media: payload is not valid base64") from None
        if len(payload) > self.max_payload_bytes:
            raise ProtocolError(f"media: payload exceeds {self.max_payload_bytes} bytes")
        chunk = _int_str(body, "chunk", "media")
        timestamp = _int_str(body, "timestamp", "media")
        assert chunk is not None and timestamp is not None
        return Media(
            seq,
            track=_str(body, "track", "media", required=False),
            chunk=chunk,
            timestamp_ms=timestamp,
            payload=payload,
        )

    def _check_stream_sid(self, msg: dict[str, Any], name: str) -> None:
        assert self.start is not None
        sid = msg.get("streamSid")
        if sid != self.start.stream_sid:
            what = "has no streamSid" if sid is None else "streamSid differs from start"
            raise ProtocolError(f"{name}: {what}")

    def _sequence(self, msg: dict[str, Any], name: str) -> int:
        seq = _int_str(msg, "sequenceNumber", name)
        assert seq is not None
        if seq <= self.last_sequence:
            raise ProtocolError(f"{name}: sequenceNumber {seq} not after {self.last_sequence}")
        self.last_sequence = seq
        return seq

    def _fail(self, reason: str) -> NoReturn:
        self.state = State.FAILED
        raise ProtocolError(reason)

    # ---------------------------------------------------------------- outbound

    def media_frames(self, mulaw: bytes) -> Iterator[str]:
        """``media`` frames for raw µ-law 8 kHz audio (see the module notes on framing)."""
        self._require_streaming("media")
        step = self.max_outbound_bytes
        for offset in range(0, len(mulaw), step):
            piece = mulaw[offset : offset + step]
            yield self._media_prefix + base64.b64encode(piece).decode("ascii") + self._media_suffix

    def mark_frame(self, name: str) -> str:
        """Ask Twilio to echo ``name`` when playback reaches this point (or on ``clear``)."""
        self._require_streaming("mark")
        if not name or len(name) > MAX_MARK_NAME_CHARS:
            raise ValueError(f"mark name must be 1..{MAX_MARK_NAME_CHARS} chars")
        return json.dumps(
            {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}},
            separators=(",", ":"),
        )

    def clear_frame(self) -> str:
        """Drop audio Twilio buffered but has not played; it then echoes every pending mark."""
        self._require_streaming("clear")
        return json.dumps({"event": "clear", "streamSid": self.stream_sid}, separators=(",", ":"))

    def _require_streaming(self, what: str) -> None:
        if self.state is not State.STREAMING:
            raise RuntimeError(f"cannot send {what} in state {self.state.value}")


# --------------------------------------------------------------------------- field helpers


def _clip(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def _obj(msg: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: missing object {key!r}")
    return value


def _str(msg: Mapping[str, Any], key: str, where: str, required: bool = True) -> str:
    value = msg.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"{where}: missing string {key!r}")
    return value


def _int(msg: Mapping[str, Any], key: str, where: str) -> int:
    value = msg.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{where}: missing integer {key!r}")
    return value


def _int_str(msg: Mapping[str, Any], key: str, where: str, required: bool = True) -> int | None:
    """Twilio sends counters as decimal strings ("42")."""
    value = msg.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        raise ProtocolError(f"{where}: {key!r} must be a decimal string")
    if len(value) > 12:
        raise ProtocolError(f"{where}: {key!r} is out of range")
    return int(value)


def _sid(msg: Mapping[str, Any], key: str) -> str:
    value = _str(msg, key, "start")
    if not _SID.match(value):
        raise ProtocolError(f"start: {key} is not a Twilio SID")
    return value
