"""Audio between an aiortc peer connection and the agent core.

Outbound: ``PlayoutBuffer`` is the pure part (bytes and marks in, 20 ms frames and reached
marks out, no clock); ``AgentAudioTrack`` is the thin edge that paces it in real time as an
aiortc ``MediaStreamTrack``. Marks follow Twilio's semantics exactly: a mark is reported when
playback reaches it, at once if nothing is buffered, and every pending mark is reported at
once on ``clear`` — so the core trims its history after a barge-in the same way on both paths.

Inbound: aiortc decodes Opus as 48 kHz stereo s16 frames; ``CallerAudioAdapter`` downmixes
and resamples them (soxr via ``app.core.audio.Converter``) to the sink's format.
"""

from __future__ import annotations

import asyncio
import fractions
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from app.core.audio import AudioChunk, AudioFormat, Converter, Encoding

FRAME_MS = 20  # one RTP packet of Opus; what browsers send and expect


class BufferFull(Exception):
    """More agent audio than the playout buffer may hold."""


@dataclass(slots=True)
class Pulled:
    """One frame of playout: ``pcm`` is exactly one frame long (silence-padded if needed)."""

    pcm: bytes
    marks: list[str] = field(default_factory=list)
    audible: int = 0  # bytes of it that were agent audio (the rest is silence)


class PlayoutBuffer:
    """Agent audio waiting to be played, with marks at byte positions. Sans-I/O.

    ``pos`` counts bytes ever pulled as audio; a mark at position p is reached once ``pos``
    passes p. Bounded by ``max_bytes``: ``push`` raises ``BufferFull`` rather than grow.
    """

    def __init__(self, fmt: AudioFormat, max_ms: int = 120_000) -> None:
        if fmt.encoding is not Encoding.PCM16 or fmt.channels != 1:
            raise ValueError(f"playout needs mono PCM16, got {fmt}")
        self.format = fmt
        self.frame_bytes = fmt.bytes_for_ms(FRAME_MS)
        self.max_bytes = fmt.bytes_for_ms(max_ms)
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._pos = 0  # bytes pulled so far
        self._end = 0  # bytes pushed so far
        self._marks: deque[tuple[int, str]] = deque()

    @property
    def buffered(self) -> int:
        return self._buffered

    @property
    def free(self) -> int:
        return self.max_bytes - self._buffered

    @property
    def pending_marks(self) -> int:
        return len(self._marks)

    def push(self, pcm: bytes) -> None:
        if len(pcm) % 2:
            raise ValueError("PCM16 audio must have an even number of bytes")
        if len(pcm) > self.free:
            raise BufferFull(f"{len(pcm)} bytes pushed, {self.free} free")
        if pcm:
            self._chunks.append(pcm)
            self._buffered += len(pcm)
            self._end += len(pcm)

    def mark(self, name: str) -> list[str]:
        """Place a mark after the audio pushed so far. Returns marks reached at once."""
        if self._buffered == 0 and not self._marks:
            return [name]  # nothing buffered: Twilio echoes such a mark immediately
        self._marks.append((self._end, name))
        return []

    def clear(self) -> list[str]:
        """Drop unplayed audio; every pending mark counts as reached (in order)."""
        self._chunks.clear()
        self._end = self._pos
        self._buffered = 0
        reached = [name for _, name in self._marks]
        self._marks.clear()
        return reached

    def pull(self) -> Pulled:
        """The next frame: buffered audio, padded with silence when the buffer runs dry."""
        want = self.frame_bytes
        parts: list[bytes] = []
        while want and self._chunks:
            head = self._chunks[0]
            if len(head) <= want:
                parts.append(self._chunks.popleft())
                want -= len(head)
            else:
                parts.append(head[:want])
                self._chunks[0] = head[want:]
                want = 0
        audible = self.frame_bytes - want
        self._buffered -= audible
        self._pos += audible
        marks: list[str] = []
        while self._marks and self._marks[0][0] <= self._pos:
            marks.append(self._marks.popleft()[1])
        if want:
            parts.append(bytes(want))
        return Pulled(b"".join(parts), marks, audible)


MarkCallback = Callable[[str], None]


class AgentAudioTrack(MediaStreamTrack):
    """The agent's voice as an outbound aiortc audio track, paced in real time.

    aiortc's sender calls ``recv`` in a loop; each call returns one 20 ms frame no earlier
    than its playout time, silence when idle (keeps the browser's jitter buffer steady).
    Also the transport's ``AudioSink``: ``send_audio``/``send_mark``/``clear``.
    """

    kind = "audio"

    def __init__(
        self,
        fmt: AudioFormat,
        on_mark: MarkCallback,
        max_ms: int = 120_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        self.format = fmt
        self.buffer = PlayoutBuffer(fmt, max_ms)
        self._on_mark = on_mark
        self._clock = clock
        self._space = asyncio.Event()
        self._start: float | None = None
        self._samples = 0  # pts of the next frame
        self._samples_per_frame = self.buffer.frame_bytes // 2
        self._time_base = fractions.Fraction(1, fmt.sample_rate)
        self.frames_sent = 0
        self.audible_frames = 0

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def _report(self, marks: list[str]) -> None:
        # Delivered on the next loop turn, like an echo from the wire, never re-entrantly.
        if marks:
            loop = asyncio.get_running_loop()
            for name in marks:
                loop.call_soon(self._on_mark, name)

    # ------------------------------------------------------------------ AudioSink side

    async def send_audio(self, chunk: AudioChunk) -> None:
        if chunk.format != self.format:
            raise ValueError(f"sink expects {self.format}, got {chunk.format}")
        data = chunk.data
        while data:
            if self.readyState != "live":
                return  # the call is over; late audio goes nowhere
            room = self.buffer.free
            if room <= 0:
                # Backpressure: wait for playout (or a clear) to make room.
                self._space.clear()
                await self._space.wait()
                continue
            take = min(room, len(data)) // 2 * 2 or len(data)
            self.buffer.push(data[:take])
            data = data[take:]

    async def send_mark(self, name: str) -> None:
        self._report(self.buffer.mark(name))

    async def clear(self) -> None:
        self._report(self.buffer.clear())
        self._space.set()

    def stop(self) -> None:
        # A closing call still reports its marks, as Twilio does when a stream stops.
        if self.readyState == "live":
            self._report_safely(self.buffer.clear())
            self._space.set()
        super().stop()

    def _report_safely(self, marks: list[str]) -> None:
        try:
            self._report(marks)
        except RuntimeError:  # no running loop (interpreter shutdown): nobody to tell
            pass

    # ------------------------------------------------------------------ aiortc side

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = self._now()
        if self._start is None:
            self._start = now
        else:
            due = self._start + self._samples / self.format.sample_rate
            if due - now > 0:
                await asyncio.sleep(due - now)
            elif now - due > 0.2:
                # We fell far behind (a stalled loop): restart the clock rather than burst.
                self._start = now - self._samples / self.format.sample_rate
        pulled = self.buffer.pull()
        frame = av.AudioFrame(format="s16", layout="mono", samples=self._samples_per_frame)
        frame.planes[0].update(pulled.pcm)
        frame.sample_rate = self.format.sample_rate
        frame.pts = self._samples
        frame.time_base = self._time_base
        self._samples += self._samples_per_frame
        self.frames_sent += 1
        if pulled.audible:
            self.audible_frames += 1
            self._space.set()
        self._report(pulled.marks)
        return frame


def downmix_s16(samples: np.ndarray, channels: int, planar: bool) -> bytes:
    """Interleaved or planar s16 samples of ``channels`` channels -> mono PCM16 bytes."""
    if channels == 1:
        return np.ascontiguousarray(samples, dtype=np.int16).reshape(-1).tobytes()
    if planar:
        per_channel = samples.reshape(channels, -1).astype(np.int32)
        mono = per_channel.sum(axis=0) // channels
    else:
        mono = samples.reshape(-1, channels).astype(np.int32).sum(axis=1) // channels
    return mono.astype(np.int16).tobytes()


class CallerAudioAdapter:
    """Decoded ``av.AudioFrame``s from the caller -> ``AudioChunk``s in the sink's format."""

    def __init__(self, dst: AudioFormat) -> None:
        if dst.channels != 1:
            raise ValueError("the core takes mono audio")
        self.dst = dst
        self._converter: Converter | None = None

    def convert(self, frame: av.AudioFrame) -> AudioChunk:
        if frame.format.name != "s16" and frame.format.name != "s16p":
            raise ValueError(f"expected s16 audio from the decoder, got {frame.format.name}")
        channels = len(frame.layout.channels)
        pcm = downmix_s16(frame.to_ndarray(), channels, frame.format.is_planar)
        rate = frame.sample_rate
        if self._converter is None or self._converter.src.sample_rate != rate:
            self._converter = Converter(AudioFormat(Encoding.PCM16, rate), self.dst)
        return AudioChunk(self._converter.convert(pcm), self.dst)
