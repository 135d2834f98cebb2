"""What the agent said, what was sent, and what the caller actually heard.

Every utterance (a sentence, the greeting, a cached phrase) is followed by a mark. The transport
plays audio in order and in real time, and echoes a mark when playback reaches it — or at once
when the buffer is cleared, so an echo after ``clear`` means "dropped", not "played". From send
times and echoes we estimate where playback is.

Barge-in is two steps. ``pause`` clears the transport the moment the caller starts talking and
remembers how far each utterance got; the audio is kept. If it was only "mm-hmm", a cough or
the agent's own echo, ``resume`` sends the rest from where it stopped. If it is a real
interruption, ``clear`` gives, per utterance, the words the caller heard, and the agent's
history keeps only those.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.core.audio import AudioChunk

# Speaking rate used to guess an utterance's length while it is still being synthesised.
_MS_PER_CHAR = 65.0


@dataclass(slots=True)
class Utterance:
    id: int
    turn: int
    text: str
    cached: bool = False
    chunks: list[AudioChunk] = field(default_factory=list)  # all audio received, kept
    audio_ms: float = 0.0  # audio received so far
    synth_done: bool = False
    sent_to_ms: float = 0.0  # offset up to which audio went to the transport
    base_ms: float = 0.0  # offset the current play-through started from (after a resume)
    play_start: float | None = None  # estimated time offset ``base_ms`` is heard
    first_sent_at: float | None = None
    mark: str | None = None
    marks_issued: int = 0

    @property
    def expected_ms(self) -> float:
        if self.synth_done:
            return self.audio_ms
        return max(self.audio_ms, len(self.text) * _MS_PER_CHAR)

    def heard_ms(self, now: float) -> float:
        if self.play_start is None:
            return self.base_ms
        played = max(0.0, now - self.play_start) * 1000.0
        return min(self.sent_to_ms, self.base_ms + played)


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


def audio_from(chunks: list[AudioChunk], offset_ms: float) -> list[AudioChunk]:
    """The audio of ``chunks`` from ``offset_ms`` on (whole samples)."""
    out: list[AudioChunk] = []
    skip = None
    for chunk in chunks:
        if skip is None:
            skip = chunk.format.bytes_for_ms(offset_ms)
        if skip >= len(chunk.data):
            skip -= len(chunk.data)
            continue
        out.append(AudioChunk(chunk.data[skip:], chunk.format) if skip else chunk)
        skip = 0
    return out


class Playback:
    """Ordered utterances not yet fully heard, and the estimated play-out clock."""

    def __init__(self) -> None:
        self._queue: list[Utterance] = []  # in play order
        self._by_mark: dict[str, Utterance] = {}
        self._cleared_marks: set[str] = set()
        self._buffer_end = 0.0  # estimated time the audio sent so far finishes playing
        self.paused = False

    def add(self, utt: Utterance) -> None:
        self._queue.append(utt)

    def get(self, utt_id: int) -> Utterance | None:
        for utt in self._queue:
            if utt.id == utt_id:
                return utt
        return None

    def audio(self, utt: Utterance, chunk: AudioChunk, now: float) -> bool:
        """Synthesised audio for ``utt``. True: send it now; False: held while paused."""
        utt.chunks.append(chunk)
        utt.audio_ms += chunk.duration_ms
        if self.paused:
            return False
        self._sent(utt, chunk.duration_ms, now)
        return True

    def _sent(self, utt: Utterance, duration_ms: float, now: float) -> None:
        start = max(now, self._buffer_end)
        if utt.play_start is None:
            utt.play_start = start
        if utt.first_sent_at is None:
            utt.first_sent_at = now
        utt.sent_to_ms += duration_ms
        self._buffer_end = start + duration_ms / 1000.0

    def finish(self, utt: Utterance) -> str | None:
        """All of ``utt``'s audio arrived; returns the mark to send after it (None while
        paused: ``resume`` sends it)."""
        utt.synth_done = True
        return None if self.paused else self._mark(utt)

    def _mark(self, utt: Utterance) -> str:
        utt.marks_issued += 1
        utt.mark = f"u{utt.id}" if utt.marks_issued == 1 else f"u{utt.id}.{utt.marks_issued}"
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
        nxt = self._queue[0] if self._queue else None
        if nxt is not None and nxt.play_start is not None:
            nxt.play_start = max(nxt.play_start, now)
        self._buffer_end = max(self._buffer_end, now)
        return utt

    def pause(self, now: float) -> None:
        """The transport was told to clear: remember how far each utterance got."""
        for utt in self._queue:
            heard = utt.heard_ms(now)
            utt.base_ms = utt.sent_to_ms = heard
            utt.play_start = None
            if utt.mark:
                self._cleared_marks.add(utt.mark)
                self._by_mark.pop(utt.mark, None)
                utt.mark = None
        self._buffer_end = now
        self.paused = True

    def resume(self, now: float) -> list[tuple[Utterance, list[AudioChunk], str | None]]:
        """Carry on from where the pause stopped: per utterance, the audio to send again and
        the mark to send after it (if its synthesis is complete)."""
        self.paused = False
        plan: list[tuple[Utterance, list[AudioChunk], str | None]] = []
        for utt in self._queue:
            rest = audio_from(utt.chunks, utt.base_ms)
            for chunk in rest:
                self._sent(utt, chunk.duration_ms, now)
            plan.append((utt, rest, self._mark(utt) if utt.synth_done else None))
        return plan

    def clear(self, now: float) -> list[tuple[Utterance, str]]:
        """A real interruption: everything pending is dropped. Returns each pending utterance
        with the part of its text the caller heard (empty for ones that never started)."""
        if not self.paused:
            self.pause(now)
        result: list[tuple[Utterance, str]] = []
        for utt in self._queue:
            fraction = utt.base_ms / utt.expected_ms if utt.expected_ms > 0 else 0.0
            result.append((utt, heard_prefix(utt.text, min(fraction, 1.0))))
        self._queue.clear()
        self.paused = False
        return result

    def audible(self, now: float) -> bool:
        """Is the caller hearing (or about to hear) agent audio already sent?"""
        if self.paused:
            return False
        return any(u.play_start is not None for u in self._queue) and (
            self._buffer_end > now or any(u.mark is not None for u in self._queue)
        )

    @property
    def pending(self) -> bool:
        """Any utterance queued, synthesising, playing or paused."""
        return bool(self._queue)

    def only(self, text: str) -> bool:
        """Is everything pending the cached phrase ``text`` (a filler)?"""
        return bool(self._queue) and all(u.cached and u.text == text for u in self._queue)

    def turn_pending(self, turn: int) -> bool:
        return any(u.turn == turn for u in self._queue)

    def playing_text(self) -> str:
        """What the agent is saying right now (for echo detection)."""
        return " ".join(u.text for u in self._queue[:2])

    def cancel_unsent(self) -> list[Utterance]:
        """Synthesis was cancelled: forget utterances that sent nothing; return those that sent
        part of their audio (they still need a mark so playback can account for them)."""
        partial = [u for u in self._queue if u.first_sent_at is not None and u.mark is None]
        self._queue = [u for u in self._queue if u.first_sent_at is not None]
        for utt in partial:
            utt.synth_done = True
        return partial
