"""Pre-synthesised fixed phrases: greeting, filler, fallback, idle prompt, goodbye.

Synthesised once at start-up, so the greeting plays the instant a call connects and the
fallback plays even when the TTS provider is the thing that is failing (a failing cloud TTS is
replaced by the local one for these). Clips are stored once and converted to a transport's
format on first use, then kept.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.core.audio import CANONICAL, AudioChunk, AudioFormat, convert_once
from app.core.providers import TextToSpeech
from app.logs import event, get_logger

log = get_logger(__name__)

CHUNK_MS = 200  # cached clips go out in pieces of this length


class PhraseCache:
    def __init__(self) -> None:
        self._clips: dict[tuple[str, AudioFormat], AudioChunk] = {}

    async def warm(
        self,
        tts: TextToSpeech,
        phrases: Iterable[str],
        formats: Iterable[AudioFormat] = (CANONICAL,),
        fallback: TextToSpeech | None = None,
    ) -> None:
        wanted = list(dict.fromkeys(formats))
        for text in dict.fromkeys(p for p in phrases if p):
            for fmt in wanted:
                if (text, fmt) in self._clips:
                    continue
                clip = await _synthesize(tts, text, fmt)
                if clip is None and fallback is not None:
                    event(log, "phrase_fallback_tts", provider=tts.name, fallback=fallback.name)
                    clip = await _synthesize(fallback, text, fmt)
                if clip is None:
                    raise RuntimeError(f"could not synthesise a fixed phrase with {tts.name}")
                self._clips[(text, fmt)] = clip

    def get(self, text: str, fmt: AudioFormat) -> list[AudioChunk] | None:
        clip = self._clips.get((text, fmt))
        if clip is None:
            source = next((c for (t, _), c in self._clips.items() if t == text), None)
            if source is None:
                return None
            clip = convert_once(source, fmt)
            self._clips[(text, fmt)] = clip
        step = fmt.bytes_for_ms(CHUNK_MS)
        data = clip.data
        return [AudioChunk(data[i : i + step], fmt) for i in range(0, len(data), step)]

    def __contains__(self, text: str) -> bool:
        return any(t == text for t, _ in self._clips)


async def _synthesize(tts: TextToSpeech, text: str, fmt: AudioFormat) -> AudioChunk | None:
    native = fmt if fmt in tts.formats else (CANONICAL if CANONICAL in tts.formats else None)
    if native is None:
        native = tts.formats[0]
    try:
        parts = [chunk.data async for chunk in tts.synthesize(text, native)]
    except Exception as exc:  # a provider failure here must not stop start-up
        event(log, "phrase_synthesis_failed", provider=tts.name, error=type(exc).__name__)
        return None
    return convert_once(AudioChunk(b"".join(parts), native), fmt)
