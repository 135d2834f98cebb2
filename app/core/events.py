"""What goes into a call session, and what comes out.

The session (``app.core.session``) is a state machine: ``handle(event, now) -> [action]``. It
never awaits and never reads the clock. The runner (``app.runtime.runner``) turns actions into
I/O and I/O back into events.

On a barge-in the session itself stops the agent's turn: it emits ``Clear`` and cancels the
model and the speech of that turn (``CancelLlm``, ``CancelSpeech``); the runner carries out
every action it is given, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.core.audio import AudioChunk
from app.core.providers import LlmRequest, LlmUsage, SttEvent, ToolCall

# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class CallStarted:
    """The transport is ready to carry audio both ways."""


@dataclass(frozen=True, slots=True)
class CallerAudio:
    """Caller audio, any length, in the transport's native format."""

    chunk: AudioChunk


@dataclass(frozen=True, slots=True)
class SttUpdate:
    event: SttEvent


@dataclass(frozen=True, slots=True)
class LlmText:
    turn: int
    text: str


@dataclass(frozen=True, slots=True)
class LlmTool:
    turn: int
    call: ToolCall


@dataclass(frozen=True, slots=True)
class LlmDone:
    turn: int
    usage: LlmUsage = field(default_factory=LlmUsage)


@dataclass(frozen=True, slots=True)
class LlmFailed:
    turn: int
    reason: str


@dataclass(frozen=True, slots=True)
class ToolDone:
    """A tool the session asked for (``RunTool``) finished, well or not."""

    call_id: str


@dataclass(frozen=True, slots=True)
class TtsAudio:
    utterance: int
    chunk: AudioChunk


@dataclass(frozen=True, slots=True)
class TtsDone:
    utterance: int


@dataclass(frozen=True, slots=True)
class TtsFailed:
    utterance: int
    reason: str


@dataclass(frozen=True, slots=True)
class MarkReached:
    """The transport reports that playback reached a mark (or the mark was cleared)."""

    name: str


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    digit: str


@dataclass(frozen=True, slots=True)
class RemoteHangup:
    reason: str = "caller hung up"


@dataclass(frozen=True, slots=True)
class Tick:
    """A timer the session asked for (``Session.next_deadline``) is due."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """The server is draining: say goodbye and end the call."""

    reason: str = "server shutting down"


Event = (
    CallStarted
    | CallerAudio
    | SttUpdate
    | LlmText
    | LlmTool
    | LlmDone
    | LlmFailed
    | ToolDone
    | TtsAudio
    | TtsDone
    | TtsFailed
    | MarkReached
    | DtmfDigit
    | RemoteHangup
    | Tick
    | Shutdown
)

# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class PlayAudio:
    chunk: AudioChunk


@dataclass(frozen=True, slots=True)
class PlayMark:
    name: str


@dataclass(frozen=True, slots=True)
class Clear:
    """Drop everything buffered for playback (barge-in)."""


@dataclass(frozen=True, slots=True)
class StartLlm:
    turn: int
    request: LlmRequest


@dataclass(frozen=True, slots=True)
class CancelLlm:
    turn: int


@dataclass(frozen=True, slots=True)
class Speak:
    """Synthesize ``text`` in the sink's format and feed it back as TtsAudio/TtsDone.

    ``cached``: a fixed phrase (greeting, filler, fallback, goodbye) the runner holds
    pre-synthesised, so it plays even when the TTS provider is failing.
    """

    utterance: int
    text: str
    cached: bool = False


@dataclass(frozen=True, slots=True)
class CancelSpeech:
    """Stop all synthesis in progress or queued."""


@dataclass(frozen=True, slots=True)
class RunTool:
    """A tool the runner carries out outside the conversation (transfer, outcome, ...)."""

    call: ToolCall


@dataclass(frozen=True, slots=True)
class EndCall:
    reason: str


@dataclass(frozen=True, slots=True)
class Emit:
    """A record for observers (logs, metrics, call records). See ``app.core.records``."""

    record: Any


Action = (
    PlayAudio
    | PlayMark
    | Clear
    | StartLlm
    | CancelLlm
    | Speak
    | CancelSpeech
    | RunTool
    | EndCall
    | Emit
)
