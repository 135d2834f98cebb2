"""The caller's voice in, a two-channel recording out.

Caller lines become raw 8 kHz µ-law, what Twilio streams: text through eSpeak NG, or any
PCM WAV file (rate, width and channels converted). Leading and trailing silence is trimmed so
that "speech onset" and "speech end" mean the voice itself, not padding around it.
"""

from __future__ import annotations

import sys
import wave
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from app.core.audio import MULAW_8K, AudioChunk, AudioFormat, Encoding, convert_once, to_pcm16

if sys.version_info >= (3, 13):  # pragma: no cover - audioop left the stdlib in 3.13
    import audioop
else:  # pragma: no cover
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

RATE = 8000
_TRIM_WINDOW = 80  # 10 ms
_TRIM_LEVEL = 300  # RMS of 16-bit samples (about -40 dBFS): below it is not speech


class CallerAudioError(ValueError):
    """A caller line could not be turned into audio (unreadable WAV, empty speech)."""


def speak(text: str, voice: str = "en-us", rate_wpm: int = 175) -> bytes:
    """Render a caller line with eSpeak NG as trimmed 8 kHz µ-law (blocking, a few ms)."""
    from app.providers.local_tts import render

    audio = trim_silence(render(text, MULAW_8K, voice, rate_wpm))
    if not audio:
        raise CallerAudioError(f"eSpeak produced no audio for a {len(text)}-character line")
    return audio


def load_wav(path: str | Path) -> bytes:
    """Any PCM WAV file as trimmed 8 kHz µ-law."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise CallerAudioError(f"cannot read WAV {Path(path).name}: {exc}") from None
    if width not in (1, 2, 3, 4):
        raise CallerAudioError(f"unsupported sample width {width} in {Path(path).name}")
    if width == 1:
        frames = audioop.bias(frames, 1, -128)  # 8-bit WAV is unsigned
    pcm = audioop.lin2lin(frames, width, 2) if width != 2 else frames
    if channels > 1:
        samples = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels)
        pcm = samples.mean(axis=1).astype("<i2").tobytes()
    audio = convert_once(AudioChunk(pcm, AudioFormat(Encoding.PCM16, rate)), MULAW_8K).data
    audio = trim_silence(audio)
    if not audio:
        raise CallerAudioError(f"{Path(path).name} holds only silence")
    return audio


def trim_silence(mulaw: bytes) -> bytes:
    """Cut near-silent 10 ms windows off both ends of a µ-law clip."""
    pcm = to_pcm16(mulaw, Encoding.MULAW)
    windows = range(0, len(mulaw), _TRIM_WINDOW)
    loud = [i for i in windows if audioop.rms(pcm[2 * i : 2 * (i + _TRIM_WINDOW)], 2) > _TRIM_LEVEL]
    if not loud:
        return b""
    return mulaw[loud[0] : loud[-1] + _TRIM_WINDOW]


def stereo_wav(
    path: str | Path, caller: bytes, agent: Iterable[tuple[float, bytes]], seconds: float
) -> None:
    """Write 8 kHz 16-bit stereo: caller left, agent right, on one timeline.

    ``caller`` is µ-law from time 0; ``agent`` holds (offset seconds, µ-law) pieces placed where
    they played. The file lasts ``seconds`` or longer if audio runs past it.
    """
    pieces = [(max(0, round(offset * RATE)), audio) for offset, audio in agent]
    n = max([round(seconds * RATE), len(caller)] + [at + len(a) for at, a in pieces])
    frames = np.zeros((n, 2), dtype="<i2")
    if caller:
        frames[: len(caller), 0] = np.frombuffer(to_pcm16(caller, Encoding.MULAW), dtype="<i2")
    for at, audio in pieces:
        if audio:
            samples = np.frombuffer(to_pcm16(audio, Encoding.MULAW), dtype="<i2")
            frames[at : at + len(samples), 1] = samples
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(frames.tobytes())
