"""What one call spends with its providers, counted as it goes and reported in increments."""

from __future__ import annotations

from typing import Any

from app.core.records import Usage


def add(a: Usage, b: Usage) -> Usage:
    return Usage(
        a.llm_input_tokens + b.llm_input_tokens,
        a.llm_output_tokens + b.llm_output_tokens,
        a.llm_cached_tokens + b.llm_cached_tokens,
        stt_seconds=round(a.stt_seconds + b.stt_seconds, 3),
        tts_characters=a.tts_characters + b.tts_characters,
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
        return Usage(
            self.llm.llm_input_tokens,
            self.llm.llm_output_tokens,
            self.llm.llm_cached_tokens,
            stt_seconds=round(seconds, 3),
            tts_characters=self.tts_chars,
        )

    def unreported(self, stt: Any = None) -> Usage | None:
        """The increment since the last report, or None when nothing was spent since."""
        now, before = self.total(stt), self._reported
        delta = Usage(
            now.llm_input_tokens - before.llm_input_tokens,
            now.llm_output_tokens - before.llm_output_tokens,
            now.llm_cached_tokens - before.llm_cached_tokens,
            stt_seconds=round(now.stt_seconds - before.stt_seconds, 3),
            tts_characters=now.tts_characters - before.tts_characters,
        )
        if delta == Usage():
            return None
        self._reported = now
        return delta
