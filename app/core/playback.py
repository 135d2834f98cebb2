"""What the agent said, what was sent, and what the caller actually heard.

Every utterance (a sentence, the greeting, a cached phrase) is followed by a mark. The transport
plays audio in order and in real time, and echoes a mark when playback reaches it — or at once
when the buffer is cleared, so an echo after ``clear`` means "dropped", not "played". From send
times and echoes we estimate where playback is; on barge-in that estimate says how much of the
interrupted utterance was heard, and the agent's history keeps only that.
"""

from __future__ import annotations

from dataclasses import dataclass

# Speaking rate used to guess an utterance's length while it is still being synthesised.
_MS_PER_CHAR = 65.0


@dataclass(slots=True)
class Utterance:
    id: int
    turn: int
    text: str
    cached: bool = False
    audio_ms: float = 0.0  # audio sent so far
    synth_done: bool = False
    mark: str | None = None  # set when all its audio was sent
    first_sent_at: float | None = None
    play_start: float | None = None  # estimated time its first sample is heard

    @property
    def expected_ms(self) -> float:
        if self.synth_done:
            return self.audio_ms
        return max(self.audio_ms, len(self.text) * _MS_PER_CHAR)


def heard_prefix(text: str, fraction: float) -> str:
    """The words of ``text`` heard when ``fraction`` of its audio played (whole words only)."""
    if fraction >= 0.999:
        return text
    if fraction <= 0:
        return ""
    cut = int(len(text) * fraction)
    head = text[:cut]
    if cut < len(text) and not text[cut].isspace():
        head = head.rsplit(" ", 1)[0] if " " in head else ""
    return head.strip()


class Playback:
    """Ordered utterances not yet fully heard, and the estimated play-out clock."""

    def __init__(self) -> None:
        self._queue: list[Utterance] = []  # in play order
        self._by_mark: dict[str, Utterance] = {}
        self._cleared_marks: set[str] = set()
        self._buffer_end = 0.0  # estimated time the audio sent so far finishes playing

    def add(self, utt: Utterance) -> None:
        self._queue.append(utt)

    def get(self, utt_id: int) -> Utterance | None:
        for utt in self._queue:
            if utt.id == utt_id:
                return utt
        return None

    def sent(self, utt: Utterance, duration_ms: float, now: float) -> None:
        start = max(now, self._buffer_end)
        if utt.first_sent_at is None:
            utt.first_sent_at = now
            utt.play_start = start
        utt.audio_ms += duration_ms
        self._buffer_end = start + duration_ms / 1000.0

    def finish(self, utt: Utterance) -> str:
        """All of ``utt``'s audio was sent; returns the mark name to send after it."""
        utt.synth_done = True
        utt.mark = f"u{utt.id}"
        self._by_mark[utt.mark] = utt
        return utt.mark

    def drop(self, utt: Utterance) -> None:
        """Forget an utterance that produced no audio (failed or empty)."""
        if utt in self._queue:
            self._queue.remove(utt)
        if utt.mark:
            self._by_mark.pop(utt.mark, None)

    def reached(self, mark: str, now: float) -> Utterance | None:
        """A mark echo. Returns the utterance that finished playing, or None for an echo that
        only confirms a clear (or an unknown mark)."""
        if mark in self._cleared_marks:
            self._cleared_marks.discard(mark)
            return None
        utt = self._by_mark.pop(mark, None)
        if utt is None:
            return None
        if utt in self._queue:
            idx = self._queue.index(utt)
            del self._queue[: idx + 1]  # anything before it has played too
        # Resync the estimate: the next utterance cannot have started before this echo.
        if self._queue and self._queue[0].play_start is not None:
            self._queue[0].play_start = max(self._queue[0].play_start, now)
        self._buffer_end = max(self._buffer_end, now)
        return utt

    def clear(self, now: float) -> list[tuple[Utterance, str]]:
        """Barge-in: everything pending is dropped. Returns each pending utterance with the
        part of its text the caller heard (empty for ones that never started)."""
        result: list[tuple[Utterance, str]] = []
        for utt in self._queue:
            heard = ""
            if utt.play_start is not None and now > utt.play_start and utt.expected_ms > 0:
                fraction = (now - utt.play_start) * 1000.0 / utt.expected_ms
                heard = heard_prefix(utt.text, min(fraction, 1.0))
            result.append((utt, heard))
            if utt.mark:
                self._cleared_marks.add(utt.mark)
                self._by_mark.pop(utt.mark, None)
        self._queue.clear()
        self._buffer_end = now
        return result

    def audible(self, now: float) -> bool:
        """Is the caller hearing (or about to hear) agent audio already sent?"""
        return any(u.first_sent_at is not None for u in self._queue) and (
            self._buffer_end > now or any(u.mark is not None for u in self._queue)
        )

    @property
    def pending(self) -> bool:
        """Any utterance queued, synthesising or playing."""
        return bool(self._queue)

    def turn_pending(self, turn: int) -> bool:
        return any(u.turn == turn for u in self._queue)

    def cancel_unsent(self) -> list[Utterance]:
        """Synthesis was cancelled: forget utterances that sent nothing; return those that sent
        part of their audio (they still need a mark so playback can account for them)."""
        partial = [u for u in self._queue if u.first_sent_at is not None and u.mark is None]
        self._queue = [u for u in self._queue if u.first_sent_at is not None]
        return partial
