"""faster-whisper behind one worker thread per process: the model, its queue and its guards.

ctranslate2 releases the GIL while it decodes, so the event loop keeps running; jobs run one at a
time in submission order, and the queue is bounded (``SttError`` when full). Whisper was trained
on subtitles, so ``is_hallucination`` names what it "hears" in silence or noise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.core.audio import CANONICAL
from app.logs import event, get_logger

log = get_logger(__name__)

DEFAULT_PROMPT = (
    "A phone call to a clinic receptionist about booking, moving or cancelling an appointment."
)
_RATE = CANONICAL.sample_rate

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
        """Transcribe 16 kHz PCM on the worker thread, in submission order. Raises SttError when
        the queue is full."""
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
