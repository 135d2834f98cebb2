"""A deterministic "voice" for the fakes: text <-> audio that survives µ-law and resampling.

Why: the fake recogniser must turn the audio it receives into words honestly (lost or garbled
audio must give a wrong transcript), and fast enough for unit tests. Each character is a 40 ms
pure tone (one frequency per symbol, 80 Hz apart, all below 4 kHz so 8 kHz phone audio carries
them), followed by 20 ms of silence; words are separated by 60 ms of silence. Decoding finds the
tone bursts by energy and names each burst by its strongest frequency, so it needs no alignment
with frame boundaries and works on any slice of a stream that holds whole bursts.

Real speech (eSpeak) and Whisper can be plugged into the fakes instead; see ``whisper.py``.
"""

from __future__ import annotations

import numpy as np

RATE = 8000
ALPHABET = "abcdefghijklmnopqrstuvwxyz'0123456789"
BASE_HZ = 400.0
STEP_HZ = 80.0
TONE_MS = 40
GAP_MS = 20
WORD_GAP_MS = 40
AMPLITUDE = 0.3

_FRAME = 40  # 5 ms energy frames at 8 kHz
_ON_RMS = 600.0
_WORD_GAP_FRAMES = 8  # 40 ms of silence ends a word (inside a word gaps are 20 ms); words
# are 60 ms apart, under a recogniser's early end (75 ms), as in fluent speech


def _samples(ms: float, rate: int) -> int:
    return int(rate * ms / 1000)


def normalise(text: str) -> str:
    """The words the code can carry: lower case letters, digits and apostrophes."""
    words = ("".join(c for c in w if c in ALPHABET) for w in text.lower().split())
    return " ".join(w for w in words if w)


def encode(text: str, rate: int = RATE) -> bytes:
    """16-bit mono PCM at ``rate`` carrying ``normalise(text)``."""
    t = np.arange(_samples(TONE_MS, rate)) / rate
    ramp = np.minimum(1.0, np.minimum(np.arange(t.size), np.arange(t.size)[::-1]) / 16.0)
    gap = np.zeros(_samples(GAP_MS, rate))
    word_gap = np.zeros(_samples(WORD_GAP_MS, rate))
    parts: list[np.ndarray] = []
    for i, word in enumerate(normalise(text).split()):
        if i:
            parts.append(word_gap)
        for c in word:
            hz = BASE_HZ + STEP_HZ * ALPHABET.index(c)
            parts.append(AMPLITUDE * ramp * np.sin(2 * np.pi * hz * t))
            parts.append(gap)
    if not parts:
        return b""
    parts.append(word_gap)  # a trailing pause, so clips played back to back keep words apart
    return (np.concatenate(parts) * 32767).astype("<i2").tobytes()


def silence(ms: float, rate: int = RATE) -> bytes:
    return bytes(2 * _samples(ms, rate))


def decode(pcm: bytes, rate: int = RATE) -> str:
    """The words carried by 16-bit mono PCM at ``rate`` ("" for silence or noise)."""
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    if rate != RATE:
        x = x[:: max(1, rate // RATE)] if rate % RATE == 0 else _resample(x, rate)
    n = x.size // _FRAME
    if n == 0:
        return ""
    rms = np.sqrt(np.mean(x[: n * _FRAME].reshape(n, _FRAME) ** 2, axis=1))
    on = rms > _ON_RMS
    words: list[str] = []
    word = ""
    off_run = _WORD_GAP_FRAMES
    i = 0
    while i < n:
        if not on[i]:
            off_run += 1
            if off_run == _WORD_GAP_FRAMES and word:
                words.append(word)
                word = ""
            i += 1
            continue
        j = i
        while j < n and on[j]:
            j += 1
        if j - i >= 4:  # at least 20 ms: a burst, not a click
            word += _symbol(x[i * _FRAME : j * _FRAME])
        off_run = 0
        i = j
    if word:
        words.append(word)
    return " ".join(words)


def _symbol(burst: np.ndarray) -> str:
    core = burst[burst.size // 8 : burst.size - burst.size // 8]
    spectrum = np.abs(np.fft.rfft(core * np.hanning(core.size), n=4096))
    hz = np.argmax(spectrum) * RATE / 4096
    idx = int(round((hz - BASE_HZ) / STEP_HZ))
    return ALPHABET[idx] if 0 <= idx < len(ALPHABET) else "?"


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    n = int(x.size * RATE / rate)
    return np.interp(np.arange(n) * rate / RATE, np.arange(x.size), x)
