"""Contracts between the agent core and everything around it.

Providers (speech to text, language model, text to speech) and transports (Twilio Media
Streams, WebRTC, the call simulator) implement these small protocols. The core imports no
vendor SDK, transport or web framework; adapters live in ``app.providers`` and
``app.transports``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from app.core.audio import AudioChunk, AudioFormat

# --------------------------------------------------------------------------- call identity


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What the core knows about a call. Phone numbers are personal data: never log them."""

    call_id: str  # Twilio CallSid, or a generated id for web/simulated calls
    transport: str  # "twilio" | "webrtc"
    direction: Literal["inbound", "outbound"] = "inbound"
    from_number: str | None = None
    to_number: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)  # per-call prompt variables
    agent: str = "default"  # agent profile name


# --------------------------------------------------------------------------- speech to text


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The recogniser heard the caller start speaking (Deepgram SpeechStarted, or local VAD)."""


@dataclass(frozen=True, slots=True)
class Transcript:
    """A transcript of caller speech.

    ``is_final``: this span of audio will not be revised any more.
    ``speech_final``: the recogniser's endpointing thinks the caller paused (end of utterance).
    Interim results (is_final False) may be revised and are used for barge-in decisions only.
    """

    text: str
    is_final: bool
    speech_final: bool = False
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    """No more words for a while (Deepgram UtteranceEnd); closes the turn if text is pending."""


@dataclass(frozen=True, slots=True)
class SttFailure:
    """The recogniser gave up (after its own retries). ``fatal``: no further events will come."""

    reason: str
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class ProbableEnd:
    """The recogniser thinks the caller has probably finished (Deepgram Flux
    ``EagerEndOfTurn``): ``text`` is the turn so far. The session may start its reply on it;
    the end of the turn is still what a final ``Transcript`` with ``speech_final`` says, and
    ``SpeechStarted`` takes it back."""

    text: str


SttEvent = SpeechStarted | Transcript | UtteranceEnd | SttFailure | ProbableEnd


@runtime_checkable
class SttStream(Protocol):
    """One live recognition stream per call."""

    async def send(self, chunk: AudioChunk) -> None:
        """Queue caller audio (in the provider's ``input_format``). Must not block for long."""

    def events(self) -> AsyncIterator[SttEvent]:
        """Events until the stream is closed."""

    async def aclose(self) -> None:
        """Flush and close; safe to call twice."""


@runtime_checkable
class SpeechToText(Protocol):
    name: str
    input_format: AudioFormat  # what ``send`` expects; the caller converts only if needed

    async def open(self, call: CallInfo) -> SttStream: ...


# --------------------------------------------------------------------------- language model


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: str
    content: str


@dataclass(frozen=True, slots=True)
class Message:
    role: Literal["user", "assistant"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # assistant only
    tool_results: tuple[ToolResult, ...] = ()  # user only: answers to the previous tool calls
    interrupted: bool = False  # assistant only: the caller cut this message off


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: Mapping[str, Any]  # JSON schema of the arguments object


@dataclass(frozen=True, slots=True)
class LlmRequest:
    system: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    call: CallInfo | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class LlmUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0


LlmEvent = TextDelta | ToolCall | LlmUsage


@runtime_checkable
class LanguageModel(Protocol):
    name: str

    def stream(self, request: LlmRequest) -> AsyncIterator[LlmEvent]:
        """Stream the assistant's reply: text deltas, tool calls, then usage. Raises on failure
        (after the adapter's own retries within its latency budget)."""


# --------------------------------------------------------------------------- text to speech


@runtime_checkable
class TextToSpeech(Protocol):
    name: str
    formats: tuple[AudioFormat, ...]  # formats it produces natively, preferred first

    def synthesize(self, text: str, fmt: AudioFormat) -> AsyncIterator[AudioChunk]:
        """Stream audio for ``text`` in ``fmt`` (one of ``formats``). Raises on failure."""


# --------------------------------------------------------------------------- transports


@runtime_checkable
class AudioSink(Protocol):
    """The agent's side of a transport: where its voice goes, and what was actually heard.

    Maps one to one onto Twilio ``media``/``mark``/``clear``; the WebRTC track implements the
    same by pacing audio itself and reporting marks when playback reaches them.
    """

    format: AudioFormat  # the transport's native format; audio arrives already in it

    async def send_audio(self, chunk: AudioChunk) -> None: ...

    async def send_mark(self, name: str) -> None:
        """Ask to be told (``Runner.mark``) when playback reaches this point, or on clear."""

    async def clear(self) -> None:
        """Drop audio buffered but not yet played. Pending marks are then reported at once."""

    async def hangup(self, reason: str) -> None:
        """End the call from our side."""
