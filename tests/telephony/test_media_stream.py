"""The Media Streams state machine against the message shapes Twilio documents."""

from __future__ import annotations

import base64
import json

import pytest

from telephony.media_stream import (
    Connected,
    Dtmf,
    Mark,
    Media,
    MediaStream,
    ProtocolError,
    Start,
    State,
    Stop,
)

ACCOUNT = "AC" + "0" * 31 + "1"
CALL = "CA" + "ab" * 16
STREAM = "MZ" + "18ad3ab5a668481ce02b83e7395059f0"[:32]


# Frames as Twilio documents them (Media Streams - WebSocket Messages).
def connected() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start(seq: int = 1, params: dict | None = None, **over: object) -> str:
    body = {
        "accountSid": ACCOUNT,
        "streamSid": STREAM,
        "callSid": CALL,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": params if params is not None else {"token": "t"},
    }
    body.update(over)
    return json.dumps(
        {"event": "start", "sequenceNumber": str(seq), "start": body, "streamSid": STREAM}
    )


def media(seq: int, payload: bytes = b"\xff" * 160, chunk: int = 1, ts: int = 5, **top) -> str:
    msg = {
        "event": "media",
        "sequenceNumber": str(seq),
        "media": {
            "track": "inbound",
            "chunk": str(chunk),
            "timestamp": str(ts),
            "payload": base64.b64encode(payload).decode(),
        },
        "streamSid": STREAM,
    }
    msg.update(top)
    return json.dumps(msg)


def dtmf(seq: int, digit: str = "1") -> str:
    return json.dumps(
        {
            "event": "dtmf",
            "streamSid": STREAM,
            "sequenceNumber": str(seq),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def mark(seq: int, name: str = "utt-1") -> str:
    return json.dumps(
        {"event": "mark", "sequenceNumber": str(seq), "streamSid": STREAM, "mark": {"name": name}}
    )


def stop(seq: int, call_sid: str = CALL) -> str:
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(seq),
            "streamSid": STREAM,
            "stop": {"accountSid": ACCOUNT, "callSid": call_sid},
        }
    )


def streaming() -> MediaStream:
    s = MediaStream()
    s.receive(connected())
    s.receive(start())
    return s


def test_full_documented_sequence_yields_typed_events() -> None:
    s = MediaStream()
    assert s.state is State.AWAITING_CONNECTED
    assert s.receive(connected()) == Connected(protocol="Call", version="1.0.0")
    assert s.state is State.AWAITING_START

    ev = s.receive(start(params={"token": "abc", "from": "+14155550100"}))
    assert isinstance(ev, Start)
    assert (ev.stream_sid, ev.call_sid, ev.account_sid) == (STREAM, CALL, ACCOUNT)
    assert ev.tracks == ("inbound",)
    assert (ev.media_format.encoding, ev.media_format.sample_rate) == ("audio/x-mulaw", 8000)
    assert ev.custom_parameters == {"token": "abc", "from": "+14155550100"}
    assert s.state is State.STREAMING and s.stream_sid == STREAM

    m = s.receive(media(2, b"\x7f\x00\xff", chunk=1, ts=20))
    assert m == Media(2, track="inbound", chunk=1, timestamp_ms=20, payload=b"\x7f\x00\xff")
    assert s.receive(dtmf(3, "#")) == Dtmf(3, track="inbound_track", digit="#")
    assert s.receive(mark(4, "greeting")) == Mark(4, "greeting")
    assert s.receive(stop(5)) == Stop(5, account_sid=ACCOUNT, call_sid=CALL)
    assert s.state is State.STOPPED


@pytest.mark.parametrize("size", [0, 1, 37, 160, 320, 1234, 16000])
def test_media_payload_of_any_length(size: int) -> None:
    s = streaming()
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    ev = s.receive(media(2, payload))
    assert isinstance(ev, Media) and ev.payload == payload


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([start()], "expected connected, got start"),
        ([media(2)], "expected connected, got media"),
        ([connected(), media(2)], "expected start, got media"),
        ([connected(), stop(2)], "expected start, got stop"),
        ([connected(), connected()], "expected start, got connected"),
        ([connected(), start(), start(2)], "second start while streaming"),
        ([connected(), start(), connected()], "second connected while streaming"),
        ([connected(), start(), stop(2), media(3)], "media after stop"),
    ],
)
def test_order_violations_are_named(frames: list[str], reason: str) -> None:
    s = MediaStream()
    for frame in frames[:-1]:
        s.receive(frame)
    with pytest.raises(ProtocolError, match=reason):
        s.receive(frames[-1])
    assert s.state is State.FAILED
    with pytest.raises(ProtocolError, match="already failed"):
        s.receive(media(99))


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON list, not an object"),
        ("[" * 100_000, "exceeds"),
        ('{"protocol": "Call"}', "no string 'event'"),
        ('{"event": "hello"}', "unknown event 'hello'"),
        (json.dumps({"event": "x" * 500}), r"unknown event 'x{40}\.\.\.'"),
    ],
)
def test_shape_errors_before_start(frame: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        MediaStream().receive(frame)


def test_deeply_nested_json_within_size_is_rejected_cleanly() -> None:
    with pytest.raises(ProtocolError, match="not JSON|not an object"):
        MediaStream(max_frame_chars=10**7).receive("[" * 200_000 + "]" * 200_000)


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        (
            {"mediaFormat": {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}},
            "unsupported media format audio/l16/16000/1",
        ),
        (
            {"mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": "8000", "channels": 1}},
            "missing integer 'sampleRate'",
        ),
        ({"callSid": "CA123"}, "callSid is not a Twilio SID"),
        ({"streamSid": None}, "missing string 'streamSid'"),
        ({"accountSid": 7}, "missing string 'accountSid'"),
        ({"tracks": "inbound"}, "tracks must be a list"),
        ({"customParameters": ["token"]}, "customParameters must be an object"),
        ({"customParameters": {"token": 5}}, "values must be strings"),
        ({"customParameters": {str(i): "v" for i in range(33)}}, "more than 32"),
    ],
)
def test_bad_start_shapes(over: dict, reason: str) -> None:
    s = MediaStream()
    s.receive(connected())
    with pytest.raises(ProtocolError, match=reason):
        s.receive(start(**over))
    assert s.state is State.FAILED and s.start is None


def test_start_top_level_stream_sid_must_agree() -> None:
    s = MediaStream()
    s.receive(connected())
    msg = json.loads(start())
    msg["streamSid"] = "MZ" + "1" * 32
    with pytest.raises(ProtocolError, match="top-level streamSid differs"):
        s.receive(json.dumps(msg))


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (media(2, streamSid="MZ" + "9" * 32), "media: streamSid differs from start"),
        (media(2, streamSid=None), "media: has no streamSid"),
        (media(1), "sequenceNumber 1 not after 1"),
        (media(2, sequenceNumber=2), "'sequenceNumber' must be a decimal string"),
        (media(2, sequenceNumber="-3"), "'sequenceNumber' must be a decimal string"),
        (media(2, sequenceNumber="9" * 40), "out of range"),
        (media(2, chunk=1).replace('"chunk": "1"', '"chunk": 1'), "'chunk' must be a decimal"),
        (media(2).replace('"timestamp": "5"', '"timestamp": "5ms"'), "'timestamp' must be"),
        (media(2).replace('"payload": "', '"payload": "!!'), "payload is not valid base64"),
        (media(2).replace('"payload": "', '"payload": "A'), "payload is not valid base64"),
        (
            json.dumps({"event": "media", "sequenceNumber": "2", "streamSid": STREAM}),
            "missing object 'media'",
        ),
        (dtmf(2, "x"), "invalid digit 'x'"),
        (dtmf(2, ""), "invalid digit ''"),
        (mark(2, "n" * 300), "name longer than 256"),
        (stop(2, call_sid="CA" + "0" * 32), "stop: callSid differs"),
    ],
)
def test_bad_frames_while_streaming(frame: str, reason: str) -> None:
    s = streaming()
    with pytest.raises(ProtocolError, match=reason):
        s.receive(frame)
    assert s.state is State.FAILED


def test_sequence_numbers_must_increase_but_may_skip() -> None:
    s = streaming()
    s.receive(media(2))
    s.receive(media(7))  # gaps are fine (a lost frame is not a protocol error)
    with pytest.raises(ProtocolError, match="sequenceNumber 7 not after 7"):
        s.receive(media(7))


def test_oversized_payload_rejected_before_decoding() -> None:
    s = MediaStream(max_payload_bytes=320)
    s.receive(connected())
    s.receive(start())
    assert isinstance(s.receive(media(2, b"\x00" * 320)), Media)
    with pytest.raises(ProtocolError, match="payload exceeds 320 bytes"):
        s.receive(media(3, b"\x00" * 321))


def test_oversized_frame_rejected() -> None:
    s = MediaStream(max_frame_chars=1000)
    s.receive(connected())
    with pytest.raises(ProtocolError, match=r"frame of \d+ chars exceeds 1000"):
        s.receive(start(params={"pad": "x" * 1000}))


def test_binary_frame_is_an_error() -> None:
    s = streaming()
    with pytest.raises(ProtocolError, match="binary frame of 3 bytes in state streaming"):
        s.receive_bytes(b"abc")
    assert s.state is State.FAILED


def test_unknown_extra_fields_are_tolerated() -> None:
    # Twilio may add fields; only missing or malformed documented ones are errors.
    s = MediaStream()
    s.receive(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0", "x": 1}))
    msg = json.loads(start())
    msg["start"]["extra"] = {"nested": True}
    assert isinstance(s.receive(json.dumps(msg)), Start)


# --------------------------------------------------------------------------- outbound


def test_media_frames_round_trip_and_split_at_limit() -> None:
    s = MediaStream(max_outbound_bytes=160)
    s.receive(connected())
    s.receive(start())
    audio = bytes(range(256)) + bytes(range(144))  # 400 bytes -> 160 + 160 + 80
    frames = list(s.media_frames(audio))
    assert len(frames) == 3
    decoded = [json.loads(f) for f in frames]
    assert all(d["event"] == "media" and d["streamSid"] == STREAM for d in decoded)
    assert all(set(d) == {"event", "streamSid", "media"} for d in decoded)
    joined = b"".join(base64.b64decode(d["media"]["payload"]) for d in decoded)
    assert joined == audio
    assert [len(base64.b64decode(d["media"]["payload"])) for d in decoded] == [160, 160, 80]


def test_small_chunks_are_sent_as_is_not_coalesced() -> None:
    s = streaming()
    assert len(list(s.media_frames(b"\x01" * 37))) == 1
    assert list(s.media_frames(b"")) == []


def test_mark_and_clear_frames() -> None:
    s = streaming()
    assert json.loads(s.mark_frame('utt "1"')) == {
        "event": "mark",
        "streamSid": STREAM,
        "mark": {"name": 'utt "1"'},
    }
    assert json.loads(s.clear_frame()) == {"event": "clear", "streamSid": STREAM}
    with pytest.raises(ValueError, match="mark name"):
        s.mark_frame("")


def test_cannot_send_before_start_or_after_stop() -> None:
    s = MediaStream()
    with pytest.raises(RuntimeError, match="cannot send media in state awaiting connected"):
        list(s.media_frames(b"\x00"))
    s.receive(connected())
    s.receive(start())
    s.receive(stop(2))
    with pytest.raises(RuntimeError, match="cannot send clear in state stopped"):
        s.clear_frame()
