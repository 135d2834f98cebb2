"""Reading the TwiML our webhook answers with, the way Twilio would (pure, no I/O).

Only ``<Connect><Stream url>`` opens a two-way media stream; ``<Start><Stream>`` forks audio
one way, so the agent's voice would never reach the caller. Twilio also connects to ``wss://``
URLs only and drops any query string, so per-call data must travel as ``<Parameter>``s.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class TwimlError(ValueError):
    """The webhook's answer would not open a two-way media stream on Twilio."""


@dataclass(frozen=True, slots=True)
class StreamTwiml:
    url: str  # as written in the TwiML (what Twilio signs), query string removed
    parameters: dict[str, str] = field(default_factory=dict)
    dropped_query: str = ""  # a query string Twilio would have dropped (a server bug)
    action: str | None = None  # <Connect action>: requested when the stream ends


def parse_twiml(text: str | bytes) -> StreamTwiml:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise TwimlError(f"webhook answer is not XML: {exc}") from None
    if root.tag != "Response":
        raise TwimlError(f"TwiML root must be <Response>, got <{root.tag}>")
    stream = root.find("./Connect/Stream")
    if stream is None:
        if root.find("./Start/Stream") is not None:
            raise TwimlError(
                "<Start><Stream> is a one-way fork: the caller would never hear the agent; "
                "use <Connect><Stream>"
            )
        verbs = ", ".join(f"<{child.tag}>" for child in root) or "nothing"
        raise TwimlError(f"no <Connect><Stream> in the TwiML (verbs: {verbs})")
    url = (stream.get("url") or "").strip()
    if not url:
        raise TwimlError("<Stream> has no url attribute")
    parts = urlsplit(url)
    local = parts.hostname in _LOOPBACK
    if not parts.netloc or parts.scheme != "wss" and not (parts.scheme == "ws" and local):
        # ws:// passes only for a server on loopback, which Twilio could never reach anyway.
        raise TwimlError(f"Twilio connects to wss:// stream URLs only, got {url!r}")
    params: dict[str, str] = {}
    for param in stream.findall("./Parameter"):
        name, value = param.get("name"), param.get("value")
        if not name or value is None:
            raise TwimlError("<Parameter> needs both name and value attributes")
        params[name] = value
    clean = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    connect = root.find("./Connect")
    action = connect.get("action") if connect is not None else None
    return StreamTwiml(
        url=clean, parameters=params, dropped_query=parts.query, action=action or None
    )


def ends_call(text: str | bytes) -> bool:
    """The TwiML hangs up (or says something and hangs up) without opening a stream."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return False
    return root.tag == "Response" and root.find("./Connect/Stream") is None


def dial_url(stream_url: str, server: str) -> str:
    """Where to actually connect: the stream URL's path on ``server`` (ws/wss per its scheme).

    Locally the server speaks plain HTTP on loopback while the TwiML names the public wss://
    host; the path (which may carry a per-call token) is kept exactly.
    """
    target = urlsplit(server)
    if target.scheme not in {"http", "https", "ws", "wss"} or not target.netloc:
        raise ValueError(f"server must be an http(s) or ws(s) URL, got {server!r}")
    scheme = "wss" if target.scheme in {"https", "wss"} else "ws"
    path = urlsplit(stream_url).path or "/"
    return urlunsplit((scheme, target.netloc, path, "", ""))
