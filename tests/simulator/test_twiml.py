"""Reading the webhook's TwiML the way Twilio does."""

import pytest
from twilio.twiml.voice_response import Connect, Start, VoiceResponse

from app.simulator.twiml import TwimlError, dial_url, parse_twiml


def connect(url: str, **params: str) -> str:
    response = VoiceResponse()
    c = Connect()
    stream = c.stream(url=url)
    for name, value in params.items():
        stream.parameter(name=name, value=value)
    response.append(c)
    return str(response)


def test_connect_stream_with_parameters() -> None:
    twiml = parse_twiml(connect("wss://voice.example.com/twilio/stream/abc", token="t", n="2"))
    assert twiml.url == "wss://voice.example.com/twilio/stream/abc"
    assert twiml.parameters == {"token": "t", "n": "2"}
    assert twiml.dropped_query == ""


def test_start_stream_is_refused_as_one_way() -> None:
    response = VoiceResponse()
    start = Start()
    start.stream(url="wss://voice.example.com/s")
    response.append(start)
    with pytest.raises(TwimlError, match=r"<Start><Stream>.*never hear"):
        parse_twiml(str(response))


def test_a_rejection_names_its_verbs() -> None:
    response = VoiceResponse()
    response.say("We are busy")
    response.hangup()
    with pytest.raises(TwimlError, match=r"<Say>, <Hangup>"):
        parse_twiml(str(response))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<Response><Connect>", "not XML"),
        ("<Html/>", "root must be <Response>"),
        ('<Response><Connect><Stream url=""/></Connect></Response>', "no url"),
        ('<Response><Connect><Stream url="https://x.example/s"/></Connect></Response>', "wss://"),
        ('<Response><Connect><Stream url="ws://x.example/s"/></Connect></Response>', "wss://"),
        (
            '<Response><Connect><Stream url="wss://x.example/s"><Parameter name="a"/>'
            "</Stream></Connect></Response>",
            "name and value",
        ),
    ],
)
def test_malformed_twiml(text: str, message: str) -> None:
    with pytest.raises(TwimlError, match=message):
        parse_twiml(text)


def test_plain_ws_is_accepted_only_on_loopback() -> None:
    twiml = parse_twiml(
        '<Response><Connect><Stream url="ws://127.0.0.1:8080/s"/></Connect></Response>'
    )
    assert twiml.url == "ws://127.0.0.1:8080/s"


def test_query_string_is_dropped_and_reported() -> None:
    twiml = parse_twiml(connect("wss://voice.example.com/s?token=abc"))
    assert twiml.url == "wss://voice.example.com/s"
    assert twiml.dropped_query == "token=abc"


def test_dial_url_keeps_the_path_on_the_real_server() -> None:
    url = "wss://voice.example.com/twilio/stream/tok-1"
    assert dial_url(url, "http://127.0.0.1:9000") == "ws://127.0.0.1:9000/twilio/stream/tok-1"
    assert (
        dial_url(url, "https://staging.example.com/")
        == "wss://staging.example.com/twilio/stream/tok-1"
    )
    with pytest.raises(ValueError, match="server must be"):
        dial_url(url, "127.0.0.1:9000")
