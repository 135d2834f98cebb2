"""Caller audio in (eSpeak text, any WAV) and the two-channel recording out."""

import wave
from pathlib import Path

import numpy as np
import pytest

from app.core.audio import Encoding, pcm16_to_mulaw, to_pcm16
from app.simulator.audio import CallerAudioError, load_wav, speak, stereo_wav, trim_silence


def sine(rate: int, ms: int, hz: float = 500.0, level: float = 0.4) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return level * np.sin(2 * np.pi * hz * t)


def write_wav(path: Path, samples: np.ndarray, rate: int, width: int, channels: int) -> None:
    if width == 1:
        data = ((samples * 127) + 128).astype(np.uint8)
    elif width == 2:
        data = (samples * 32767).astype("<i2")
    else:
        data = (samples * 2**31 - 1).astype("<i4")
    interleaved = np.repeat(data, channels)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(interleaved.tobytes())


def level(mulaw: bytes) -> float:
    pcm = np.frombuffer(to_pcm16(mulaw, Encoding.MULAW), dtype="<i2").astype(float)
    return float(np.sqrt(np.mean(pcm**2)))


@pytest.mark.parametrize(
    ("rate", "width", "channels"), [(44100, 2, 2), (16000, 1, 1), (8000, 4, 1)]
)
def test_any_pcm_wav_becomes_8k_mulaw(tmp_path: Path, rate: int, width: int, channels: int) -> None:
    silence = np.zeros(rate // 5)
    path = tmp_path / "line.wav"
    write_wav(path, np.concatenate([silence, sine(rate, 500), silence]), rate, width, channels)
    audio = load_wav(path)
    # 500 ms of tone, the 200 ms of silence on each side trimmed (to 10 ms windows)
    assert 3900 <= len(audio) <= 4200
    assert 0.4 * 32767 / np.sqrt(2) * 0.8 < level(audio) < 0.4 * 32767 / np.sqrt(2) * 1.2


def test_unreadable_or_silent_wav_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    with pytest.raises(CallerAudioError, match="cannot read WAV bad.wav"):
        load_wav(bad)
    quiet = tmp_path / "quiet.wav"
    write_wav(quiet, np.zeros(8000), 8000, 2, 1)
    with pytest.raises(CallerAudioError, match="only silence"):
        load_wav(quiet)


def test_trim_keeps_the_voice_only() -> None:
    tone = pcm16_to_mulaw((sine(8000, 300) * 32767).astype("<i2").tobytes())
    pad = b"\xff" * 1600
    assert trim_silence(pad + tone + pad) == tone
    assert trim_silence(pad) == b""


def test_espeak_line_is_trimmed_speech() -> None:
    audio = speak("I'd like to book an appointment tomorrow at ten.")
    assert 1.0 < len(audio) / 8000 < 5.0
    assert level(audio[:80]) > 300 and level(audio[-80:]) > 300  # starts and ends on voice


def test_stereo_layout_caller_left_agent_right_on_one_timeline(tmp_path: Path) -> None:
    caller = b"\xff" * 8000 + pcm16_to_mulaw((sine(8000, 500) * 32767).astype("<i2").tobytes())
    agent_tone = pcm16_to_mulaw((sine(8000, 250, 1000) * 32767).astype("<i2").tobytes())
    path = tmp_path / "call.wav"
    stereo_wav(path, caller, [(0.25, agent_tone), (2.0, agent_tone)], seconds=2.0)
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    assert len(frames) == 8000 * 2 + 2000  # the last agent piece runs past ``seconds``

    def loud(channel: int, start_s: float, end_s: float) -> bool:
        piece = frames[int(start_s * 8000) : int(end_s * 8000), channel].astype(float)
        return bool(np.sqrt(np.mean(piece**2)) > 1000)

    assert not loud(0, 0.0, 1.0) and loud(0, 1.0, 1.5) and not loud(0, 1.5, 2.0)
    assert not loud(1, 0.0, 0.25) and loud(1, 0.25, 0.5) and not loud(1, 0.5, 2.0)
    assert loud(1, 2.0, 2.25)
