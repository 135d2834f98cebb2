"""Offline text to speech: eSpeak NG through ctypes, on the library ``espeakng-loader`` ships.

eSpeak NG keeps global state (one voice, one rate, one callback per process), so all synthesis
goes through one lock, in a worker thread: it is ~1000x faster than real time, so a whole
sentence renders in a few milliseconds and we simply cut the clip into ~100 ms chunks.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import AsyncIterator

from app.config import LocalProviderSettings
from app.core.audio import (
    CANONICAL,
    MULAW_8K,
    PCM_8K,
    PCM_48K,
    AudioChunk,
    AudioFormat,
    Encoding,
    convert_once,
)
from app.logs import event, get_logger

log = get_logger(__name__)

# espeak_AUDIO_OUTPUT: synchronous mode calls our callback from inside espeak_Synth.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_EE_OK = 0
_CHUNK_MS = 100
_MAX_TEXT_CHARS = 5_000  # a reply longer than this is a bug upstream, not speech

# int callback(short *wav, int numsamples, espeak_EVENT *events); return 0 to continue.
_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _VoiceSpec(ctypes.Structure):
    """espeak_VOICE: a voice selected by language (``en-gb``) rather than by file name."""

    _fields_ = [  # noqa: RUF012 - ctypes layout
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, name, NUL) ..., then a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class TtsError(RuntimeError):
    """eSpeak NG could not be loaded or refused to synthesize."""


class _Espeak:
    """The process-wide library handle. Every method holds ``_lock``."""

    def __init__(self) -> None:
        import espeakng_loader

        self._lock = threading.Lock()
        try:
            self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as exc:
            raise TtsError(f"cannot load libespeak-ng: {exc}") from exc
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_VoiceSpec)]
        lib.espeak_SetVoiceByProperties.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceSpec))
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int

        data_path = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if rate <= 0:
            raise TtsError(f"espeak_Initialize failed ({rate})")
        self.sample_rate = rate  # 22050 for the bundled voices
        self.format = AudioFormat(Encoding.PCM16, rate)
        self._parts: list[bytes] = []
        # The callback object must outlive every synthesis: keep it on the instance.
        self._callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None
        self._rate: int | None = None
        self.languages = self._languages()

    def _languages(self) -> frozenset[str]:
        """Every language tag some installed voice speaks (``en-gb``, ``en-us``, ``fr`` ...)."""
        found: set[str] = set()
        voices = self._lib.espeak_ListVoices(None)
        i = 0
        while voices[i]:
            at = voices[i].contents.languages
            while at and ctypes.string_at(at, 1)[0] != 0:
                name = ctypes.string_at(at + 1)
                found.add(name.decode("ascii", "replace").lower())
                at += len(name) + 2
            i += 1
        return frozenset(found)

    def _collect(self, wav, numsamples, events):  # type: ignore[no-untyped-def]
        if numsamples > 0 and wav:
            self._parts.append(ctypes.string_at(wav, numsamples * 2))
        return 0

    def _select(self, voice: str) -> None:
        """A voice file name (``en-us``, ``gmw/en``) or a language tag (``en-gb``, ``fr``):
        eSpeak NG names its British English file ``en``, so ``en-gb`` only matches by language."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) == _EE_OK:
            return
        tag = voice.strip().lower().encode()
        # Only a language some voice really speaks: by properties eSpeak would take "no-such"
        # for Norwegian ("no") rather than refuse it.
        spec = _VoiceSpec(languages=ctypes.cast(ctypes.c_char_p(tag), ctypes.c_void_p))
        if tag.decode() not in self.languages or self._lib.espeak_SetVoiceByProperties(
            ctypes.byref(spec)
        ) != _EE_OK:
            raise TtsError(
                f"unknown eSpeak voice {voice!r}: use a language tag such as en-us, en-gb, fr, de"
            )

    def render(self, text: str, voice: str, rate_wpm: int) -> bytes:
        """Whole clip as 16-bit PCM at ``sample_rate``. Blocking: call it off the event loop."""
        raw = text.encode("utf-8")
        with self._lock:
            if voice != self._voice:
                self._select(voice)
                self._voice = voice
                self._rate = None  # a new voice resets the rate
            if rate_wpm != self._rate:
                self._lib.espeak_SetParameter(_ESPEAK_RATE, rate_wpm, 0)
                self._rate = rate_wpm
            self._parts = []
            buf = ctypes.create_string_buffer(raw)
            err = self._lib.espeak_Synth(
                buf, len(raw) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            self._lib.espeak_Synchronize()
            parts, self._parts = self._parts, []
        if err != _EE_OK:
            raise TtsError(f"espeak_Synth failed ({err})")
        return b"".join(parts)


_engine: _Espeak | None = None
_engine_lock = threading.Lock()


def _get_engine() -> _Espeak:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Espeak()
        return _engine


def render(
    text: str, fmt: AudioFormat = CANONICAL, voice: str = "en-us", rate_wpm: int = 175
) -> bytes:
    """Synthesize ``text`` as one clip in ``fmt`` (blocking). Used for cached phrases and to make
    caller audio in the call simulator and tests."""
    if len(text) > _MAX_TEXT_CHARS:
        raise TtsError(f"text too long to speak ({len(text)} characters)")
    if not text.strip():
        return b""
    engine = _get_engine()
    pcm = engine.render(text, voice, rate_wpm)
    return convert_once(AudioChunk(pcm, engine.format), fmt).data


class EspeakTts:
    """``TextToSpeech`` on eSpeak NG. Robotic but instant, offline and free."""

    name = "espeak"
    formats: tuple[AudioFormat, ...] = (MULAW_8K, CANONICAL, PCM_8K, PCM_48K)

    def __init__(self, settings: LocalProviderSettings | None = None) -> None:
        settings = settings or LocalProviderSettings()
        self.voice = settings.espeak_voice
        self.rate_wpm = settings.espeak_rate_wpm

    def warm(self) -> None:
        """Load the library and voice now, so the first caller does not pay for it."""
        render("Hello.", CANONICAL, self.voice, self.rate_wpm)
        event(log, "tts_warm", provider=self.name, voice=self.voice, rate_wpm=self.rate_wpm)

    async def synthesize(self, text: str, fmt: AudioFormat) -> AsyncIterator[AudioChunk]:
        if fmt not in self.formats:
            raise ValueError(f"{self.name} cannot produce {fmt}")
        data = await asyncio.to_thread(render, text, fmt, self.voice, self.rate_wpm)
        step = fmt.bytes_for_ms(_CHUNK_MS)
        for i in range(0, len(data), step):
            yield AudioChunk(data[i : i + step], fmt)
