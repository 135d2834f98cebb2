"""Messages as Twilio writes them, and the checks on what the server sends back."""

import base64
import json

import pytest

from app.simulator.wire import (
    AgentClear,
    AgentMark,
    AgentMedia,
    ProtocolViolation,
    TwilioMessages,
    new_sid,
    parse_server_message,
)

SID = "MZ" + "a" * 32


def msgs() -> TwilioMessages:
    return TwilioMessages("AC" + "1" * 32, "CA" + "2" * 32, SID, {"token": "t1"})


def test_sids_look_like_twilio_ids() -> None:
    sid = new_sid("CA")
    assert sid.startswith("CA") and len(sid) == 34 and sid != new_sid("CA")


def test_message_sequence_and_counters_are_strings_like_twilio() -> None:
    m = msgs()
    connected = json.loads(m.connected())
    start = json.loads(m.start())
    first = json.loads(m.media(b"\x00" * 160))
    second = json.loads(m.media(b"\x01" * 160))
    dtmf = json.loads(m.dtmf("5"))
    echo = json.loads(m.mark("m1"))
    stop = json.loads(m.stop())
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start["start"]["customParameters"] == {"token": "t1"}
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    assert start["start"]["tracks"] == ["inbound"]
    seqs = [x["sequenceNumber"] for x in (start, first, second, dtmf, echo, stop)]
    assert seqs == ["1", "2", "3", "4", "5", "6"]
    assert (first["media"]["chunk"], first["media"]["timestamp"]) == ("1", "0")
    assert (second["media"]["chunk"], second["media"]["timestamp"]) == ("2", "20")
    assert base64.b64decode(second["media"]["payload"]) == b"\x01" * 160
    assert dtmf["dtmf"]["digit"] == "5" and echo["mark"]["name"] == "m1"
    assert {x["streamSid"] for x in (start, first, dtmf, echo, stop)} == {SID}
    assert stop["stop"]["callSid"] == "CA" + "2" * 32


def server(event: str, **extra: object) -> str:
    return json.dumps({"event": event, "streamSid": SID, **extra})


def test_valid_server_messages_parse() -> None:
    payload = base64.b64encode(b"\x10\x20\x30").decode()
    assert parse_server_message(server("media", media={"payload": payload}), SID) == AgentMedia(
        b"\x10\x20\x30"
    )
    assert parse_server_message(server("mark", mark={"name": "x"}), SID) == AgentMark("x")
    assert parse_server_message(server("clear"), SID) == AgentClear()


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (b"\x00\x01", "binary_frame"),
        ("not json", "not_json"),
        ("[1, 2]", "not_object"),
        (server("start"), "unknown_event"),
        (json.dumps({"event": "clear", "streamSid": "MZother"}), "wrong_stream_sid"),
        (json.dumps({"event": "clear"}), "wrong_stream_sid"),
        (server("mark", mark={}), "bad_mark"),
        (server("mark"), "bad_mark"),
        (server("media", media={"payload": "%%%"}), "bad_media"),
        (server("media", media={"payload": ""}), "bad_media"),
        (server("media"), "bad_media"),
        (
            server("media", media={"payload": base64.b64encode(b"RIFF....WAVE").decode()}),
            "bad_media",
        ),
    ],
)
def test_violations_are_named(message: str | bytes, kind: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        parse_server_message(message, SID)
    assert info.value.kind == kind
