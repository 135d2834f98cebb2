"""What one call spends with its providers, counted as it goes and reported in increments."""

from __future__ import annotations

import dataclasses
from typing import Any

from app.core.records import Usage


def add(a: Usage, b: Usage, sign: int = 1) -> Usage:
    """``a + b`` (``sign`` -1: ``a - b``), field by field."""
    return Usage(
        a.llm_input_tokens + sign * b.llm_input_tokens,
        a.llm_output_tokens + sign * b.llm_output_tokens,
        a.llm_cached_tokens + sign * b.llm_cached_tokens,
        stt_seconds=round(a.stt_seconds + sign * b.stt_seconds, 3),
        tts_characters=a.tts_characters + sign * b.tts_characters,
        llm_wasted_input_tokens=a.llm_wasted_input_tokens + sign * b.llm_wasted_input_tokens,
        llm_wasted_output_tokens=a.llm_wasted_output_tokens + sign * b.llm_wasted_output_tokens,
    )


class UsageMeter:
    def __init__(self) -> None:
        self.llm = Usage()  # model tokens, summed from the session's records
        self.stt_ms = 0.0  # caller audio forwarded to the recogniser
        self.tts_chars = 0
        self._reported = Usage()  # what observers have been told

    def total(self, stt: Any = None) -> Usage:
        """Everything so far. ``stt``: the recogniser stream, when it counts billed audio
        itself (a reconnect resends audio)."""
        billed = getattr(stt, "audio_seconds", None)
        seconds = float(billed) if isinstance(billed, int | float) else self.stt_ms / 1000.0
        return dataclasses.replace(
            self.llm, stt_seconds=round(seconds, 3), tts_characters=self.tts_chars
        )

    def unreported(self, stt: Any = None) -> Usage | None:
        """The increment since the last report, or None when nothing was spent since."""
        now, before = self.total(stt), self._reported
        delta = add(now, before, sign=-1)
        if delta == Usage():
            return None
        self._reported = now
        return delta
