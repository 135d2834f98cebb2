"""The TwiML documents, parsed back as XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from twiml.voice import connect_stream, reject_busy


def parse(doc: str) -> ET.Element:
    assert doc.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(doc)
    assert root.tag == "Response"
    return root


def test_connect_stream_with_parameters_then_hangup() -> None:
    url = "wss://agent.example.com/twilio/media"
    root = parse(connect_stream(url, {"token": "1.abc", "from": "+14155550100", "q": '<&">'}))
    assert [child.tag for child in root] == ["Connect", "Hangup"]
    (stream,) = list(root[0])
    assert stream.tag == "Stream" and stream.attrib == {"url": url}
    assert [(p.tag, p.get("name"), p.get("value")) for p in stream] == [
        ("Parameter", "token", "1.abc"),
        ("Parameter", "from", "+14155550100"),
        ("Parameter", "q", '<&">'),
    ]


def test_connect_stream_without_parameters() -> None:
    root = parse(connect_stream("wss://a.example/m"))
    assert list(root[0][0]) == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://a.example/m", "must be wss://"),
        ("wss:///m", "must be wss://"),
        ("wss://a.example/m?token=x", "query or fragment"),
        ("wss://a.example/m#f", "query or fragment"),
    ],
)
def test_connect_stream_rejects_urls_twilio_would_mangle(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        connect_stream(url)


def test_connect_stream_rejects_empty_parameter_name() -> None:
    with pytest.raises(ValueError, match="names must not be empty"):
        connect_stream("wss://a.example/m", {"": "x"})


def test_reject_busy_says_then_hangs_up() -> None:
    root = parse(reject_busy("All lines are busy."))
    assert [(c.tag, c.text) for c in root] == [("Say", "All lines are busy."), ("Hangup", None)]


def test_reject_busy_dials_fallback() -> None:
    root = parse(reject_busy("Transferring you.", fallback_number="+14155550123"))
    assert [(c.tag, c.text) for c in root] == [
        ("Say", "Transferring you."),
        ("Dial", "+14155550123"),
    ]


@pytest.mark.parametrize("number", ["4155550123", "+0123456789", "+1 415 555 0123", ""])
def test_reject_busy_rejects_non_e164_fallback(number: str) -> None:
    with pytest.raises(ValueError, match="E.164"):
        reject_busy("busy", fallback_number=number)
