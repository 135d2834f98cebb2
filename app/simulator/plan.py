"""What a simulated caller will do: the lines to say and the knobs of the call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from telephony import paths

# Twilio's documented test numbers: valid, never a real person.
DEFAULT_FROM = "+15005550006"
DEFAULT_TO = "+15005550001"
DUMMY_AUTH_TOKEN = "simulator-unsigned-token"  # servers that trust loopback ignore it

# Phrased so that Whisper tiny.en hears eSpeak's voice through 8 kHz µ-law reliably ("at ten in
# the morning" comes back as "I'll stand in the morning"; "at ten o'clock" survives).
DEFAULT_CONVERSATION = (
    "I'd like to book an appointment tomorrow at ten o'clock.",
    "My name is Alex Morgan.",
    "Yes, that's right.",
    "No, that's everything. Thank you, goodbye.",
)


@dataclass(frozen=True, slots=True)
class CallerLine:
    """One caller turn: text (spoken with eSpeak NG), a WAV file, raw µ-law, or DTMF digits.

    ``barge_in_ms``: speak this long after the agent *starts* its previous reply, instead of
    waiting for it to finish. ``expect_reply``: False for input the agent may answer with
    silence (digits); the caller then only waits ``settle_ms`` before going on.
    """

    text: str | None = None
    wav: Path | None = None
    audio: bytes | None = None
    dtmf: str = ""
    barge_in_ms: int | None = None
    expect_reply: bool = True

    def __post_init__(self) -> None:
        given = [x for x in (self.text, self.wav, self.audio) if x is not None]
        if self.dtmf:
            if given:
                raise ValueError("a line is either speech or DTMF digits, not both")
            bad = set(self.dtmf) - set("0123456789*#")
            if bad:
                raise ValueError(f"not DTMF digits: {''.join(sorted(bad))!r}")
        elif len(given) != 1:
            raise ValueError("a line needs exactly one of text, wav, audio or dtmf")
        if self.barge_in_ms is not None and self.barge_in_ms < 0:
            raise ValueError("barge_in_ms must be >= 0")

    @property
    def label(self) -> str:
        if self.dtmf:
            return f"DTMF {self.dtmf}"
        if self.text is not None:
            return self.text
        if self.wav is not None:
            return f"[{Path(self.wav).name}]"
        return f"[{len(self.audio or b'') / 8:.0f} ms of audio]"


@dataclass(frozen=True, slots=True)
class CallOptions:
    """How to reach the server and how patient the caller is. Times in seconds unless noted."""

    public_url: str | None = None  # the URL Twilio would use (signatures); default: server
    auth_token: str = DUMMY_AUTH_TOKEN
    account_sid: str = "AC" + "0" * 32
    from_number: str = DEFAULT_FROM
    to_number: str = DEFAULT_TO
    webhook_path: str = paths.VOICE
    connect_timeout: float = 10.0
    greeting_timeout: float = 15.0  # start -> first agent audio
    reply_timeout: float = 20.0  # speech end -> first agent audio
    settle_ms: int = 600  # quiet after the agent's audio played out before the caller speaks
    call_timeout: float = 300.0  # the whole call
    dtmf_gap_ms: int = 200  # between key presses
    caller_voice: str = "en-us"
    caller_rate_wpm: int = 175
    wav_out: Path | None = None  # write the stereo recording here
    # An outbound call the server placed answers with Direction outbound-api and its own SID.
    direction: str = "inbound"
    call_sid: str | None = None
    transcribe: bool = False  # transcribe each agent reply with the local Whisper model


def as_line(line: CallerLine | str) -> CallerLine:
    return line if isinstance(line, CallerLine) else CallerLine(text=line)
