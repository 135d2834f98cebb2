"""The core's audio vocabulary: formats, chunks and a streaming converter.

Canonical internal format: 16-bit signed little-endian mono PCM at 16 kHz (``CANONICAL``).
Chunks carry their own format so that audio a provider already delivers in the sink's native
format (e.g. ElevenLabs ``ulaw_8000`` to Twilio, or Twilio's µ-law to Deepgram) passes through
untouched: converting costs CPU on every frame, so we only convert when formats differ.
"""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass

import numpy as np
import soxr

if sys.version_info >= (3, 13):  # pragma: no cover - audioop left the stdlib in 3.13
    import audioop
else:  # pragma: no cover
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop


class Encoding(enum.StrEnum):
    PCM16 = "pcm16"  # signed 16-bit little-endian
    MULAW = "mulaw"  # G.711 µ-law, one byte per sample


@dataclass(frozen=True, slots=True)
class AudioFormat:
    encoding: Encoding
    sample_rate: int
    channels: int = 1

    @property
    def sample_width(self) -> int:
        return 2 if self.encoding is Encoding.PCM16 else 1

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.sample_width * self.channels

    def duration_ms(self, nbytes: int) -> float:
        return nbytes * 1000.0 / self.bytes_per_second

    def bytes_for_ms(self, ms: float) -> int:
        frame = self.sample_width * self.channels
        return int(self.bytes_per_second * ms / 1000.0) // frame * frame

    def __str__(self) -> str:
        return f"{self.encoding}/{self.sample_rate}"


CANONICAL = AudioFormat(Encoding.PCM16, 16_000)
MULAW_8K = AudioFormat(Encoding.MULAW, 8_000)  # Twilio Media Streams, always
PCM_8K = AudioFormat(Encoding.PCM16, 8_000)
PCM_48K = AudioFormat(Encoding.PCM16, 48_000)


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of audio in a known format. ``data`` is raw samples, no header."""

    data: bytes
    format: AudioFormat

    @property
    def duration_ms(self) -> float:
        return self.format.duration_ms(len(self.data))

    def __len__(self) -> int:
        return len(self.data)


class Converter:
    """Streaming format converter for one direction of one call.

    Keeps resampler state between chunks (so no clicks at chunk edges). Pass-through when the
    formats are equal. soxr quality ``QQ`` is chosen on purpose: at 8->16 kHz the default HQ
    quality holds back ~120 ms before its first output and then emits in ~100 ms bursts, which
    would add that much to every turn's latency; QQ emits on every chunk at ~2 µs per 20 ms.
    """

    __slots__ = ("src", "dst", "_resampler", "_passthrough")

    def __init__(self, src: AudioFormat, dst: AudioFormat, quality: str = "QQ") -> None:
        if src.channels != 1 or dst.channels != 1:
            raise ValueError("Converter handles mono audio only")
        self.src = src
        self.dst = dst
        self._passthrough = src == dst
        self._resampler = (
            soxr.ResampleStream(src.sample_rate, dst.sample_rate, 1, dtype="int16", quality=quality)
            if src.sample_rate != dst.sample_rate
            else None
        )

    def convert(self, data: bytes, last: bool = False) -> bytes:
        if self._passthrough:
            return data
        pcm = to_pcm16(data, self.src.encoding)
        if self._resampler is not None:
            samples = np.frombuffer(pcm, dtype=np.int16)
            pcm = self._resampler.resample_chunk(samples, last=last).tobytes()
        if self.dst.encoding is Encoding.MULAW:
            return audioop.lin2ulaw(pcm, 2)
        return pcm

    def chunk(self, chunk: AudioChunk, last: bool = False) -> AudioChunk:
        if chunk.format != self.src:
            raise ValueError(f"converter expects {self.src}, got {chunk.format}")
        if self._passthrough:
            return chunk
        return AudioChunk(self.convert(chunk.data, last), self.dst)


def to_pcm16(data: bytes, encoding: Encoding) -> bytes:
    if encoding is Encoding.MULAW:
        return audioop.ulaw2lin(data, 2)
    return data


def pcm16_to_mulaw(pcm: bytes) -> bytes:
    return audioop.lin2ulaw(pcm, 2)


def convert_once(chunk: AudioChunk, dst: AudioFormat) -> AudioChunk:
    """Convert a whole, self-contained clip (e.g. a cached phrase) in one go."""
    if chunk.format == dst:
        return chunk
    return Converter(chunk.format, dst, quality="HQ").chunk(chunk, last=True)


def rms_dbfs(pcm: bytes) -> float:
    """Level of 16-bit PCM in dBFS (silence is -inf)."""
    if not pcm:
        return float("-inf")
    rms = audioop.rms(pcm, 2)
    return 20 * np.log10(rms / 32768.0) if rms else float("-inf")
