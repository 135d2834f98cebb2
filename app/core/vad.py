"""Voice activity: a pure segmenter over webrtcvad's per-frame decisions.

Feed 16-bit mono PCM of any length; get ``SpeechStart``/``SpeechEnd`` at stream offsets (ms of
audio fed so far), never wall-clock time: the caller maps offsets to its own clock.

Why these defaults: a run must be voiced for ``start_ms`` (60 ms) before it counts, which
ignores clicks and line noise; it ends after ``stop_ms`` (300 ms) of silence, long enough not to
split words at stop consonants, short enough to keep turn latency low. webrtcvad costs a few µs
per 20 ms frame, so it is cheap enough to run on every call's every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import webrtcvad

_RATES = (8000, 16000, 32000, 48000)


@dataclass(frozen=True, slots=True)
class SpeechStart:
    at_ms: float  # stream offset where the voiced run began


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    at_ms: float  # stream offset of the end of the last voiced frame
    duration_ms: float


VadEvent = SpeechStart | SpeechEnd


class Quiet:
    """How long the audio has stayed far below (``drop_db``) the loudest frame since ``reset``.

    webrtcvad keeps calling frames voiced for ~100 ms after a sound stops (its hangover); a drop
    in energy shows the stop at once. Used only to tell a short backchannel from the start of a
    sentence while the agent is paused, so it costs nothing on other frames.
    """

    __slots__ = ("_frame_bytes", "frame_ms", "_ratio", "_peak", "_quiet_ms", "_pending")

    def __init__(self, sample_rate: int, frame_ms: int = 20, drop_db: float = 20.0) -> None:
        self.frame_ms = frame_ms
        self._frame_bytes = sample_rate * frame_ms // 1000 * 2
        self._ratio = 10 ** (drop_db / 10)  # in power
        self.reset()

    def reset(self) -> None:
        self._peak = 0.0
        self._quiet_ms = 0.0
        self._pending = b""

    @property
    def quiet_ms(self) -> float:
        return self._quiet_ms

    def feed(self, pcm: bytes) -> float:
        data = self._pending + pcm if self._pending else pcm
        n = self._frame_bytes
        usable = len(data) - len(data) % n
        self._pending = data[usable:]
        for i in range(0, usable, n):
            samples = np.frombuffer(data, dtype=np.int16, count=n // 2, offset=i)
            power = float(np.dot(samples, samples.astype(np.float64))) / len(samples)
            self._peak = max(self._peak, power)
            if self._peak > 0 and power * self._ratio < self._peak:
                self._quiet_ms += self.frame_ms
            else:
                self._quiet_ms = 0.0
        return self._quiet_ms


class VoiceActivity:
    __slots__ = (
        "sample_rate",
        "frame_ms",
        "start_ms",
        "stop_ms",
        "_vad",
        "_frame_bytes",
        "_pending",
        "_position_ms",
        "_speaking",
        "_run_start",
        "_voiced_run",
        "_last_voiced_end",
        "_silence_ms",
    )

    def __init__(
        self,
        sample_rate: int,
        aggressiveness: int = 2,
        frame_ms: int = 20,
        start_ms: int = 60,
        stop_ms: int = 300,
    ) -> None:
        if sample_rate not in _RATES:
            raise ValueError(f"webrtcvad supports {_RATES} Hz, not {sample_rate}")
        if frame_ms not in (10, 20, 30):
            raise ValueError("frame_ms must be 10, 20 or 30")
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.start_ms = start_ms
        self.stop_ms = stop_ms
        self._vad = webrtcvad.Vad(aggressiveness)
        self._frame_bytes = sample_rate * frame_ms // 1000 * 2
        self._pending = b""
        self._position_ms = 0.0
        self._speaking = False
        self._run_start = 0.0  # offset where the current voiced run (candidate or speech) began
        self._voiced_run = 0.0  # consecutive voiced ms while not yet speaking
        self._last_voiced_end = 0.0
        self._silence_ms = 0.0

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def speech_ms(self) -> float:
        return self._last_voiced_end - self._run_start if self._speaking else 0.0

    @property
    def voiced_to_ms(self) -> float:
        """Stream offset where the last voiced frame ended."""
        return self._last_voiced_end

    @property
    def silence_ms(self) -> float:
        """Silence since the last voiced frame while a run is still open (0 otherwise)."""
        return self._silence_ms if self._speaking else 0.0

    @property
    def position_ms(self) -> float:
        return self._position_ms

    def feed(self, pcm: bytes) -> list[VadEvent]:
        data = self._pending + pcm if self._pending else pcm
        n = self._frame_bytes
        usable = len(data) - len(data) % n
        self._pending = data[usable:]
        events: list[VadEvent] = []
        for i in range(0, usable, n):
            voiced = self._vad.is_speech(data[i : i + n], self.sample_rate)
            event = self._step(voiced)
            if event is not None:
                events.append(event)
        return events

    def _step(self, voiced: bool) -> VadEvent | None:
        frame_start = self._position_ms
        self._position_ms += self.frame_ms
        if voiced:
            self._silence_ms = 0.0
            self._last_voiced_end = self._position_ms
            if self._speaking:
                return None
            if self._voiced_run == 0.0:
                self._run_start = frame_start
            self._voiced_run += self.frame_ms
            if self._voiced_run >= self.start_ms:
                self._speaking = True
                return SpeechStart(self._run_start)
            return None
        if not self._speaking:
            self._voiced_run = 0.0
            return None
        self._silence_ms += self.frame_ms
        if self._silence_ms >= self.stop_ms:
            self._speaking = False
            self._voiced_run = 0.0
            self._silence_ms = 0.0
            return SpeechEnd(self._last_voiced_end, self._last_voiced_end - self._run_start)
        return None
