"""Streaming sentence splitting: LLM text deltas in, speakable pieces out.

Why: TTS must start on the first sentence while the model is still writing, but a split in the
wrong place ("Dr." or "10.30" or "a.m. tomorrow") makes the voice pause mid-phrase. A boundary is
sentence punctuation followed by white space and then something that starts a sentence; so a
piece is released only once the next word has begun (one token of look-ahead, ~25 ms). A long
run without a sentence end is released at a comma so the first audio is never held back long.

The first piece of a reply is the one the caller waits for in silence, so it does not wait for
the look-ahead when the text so far plainly ends a sentence: sentence punctuation at its end,
after a word that is not an abbreviation, a number ("10." may be 10.30) or a single letter
("U.S."). Later pieces are synthesised while earlier ones play, so they keep the look-ahead.
"""

from __future__ import annotations

import re

_BOUNDARY = re.compile(r"""[.!?…]+["')\]]*\s+(?=["'(\[]?[A-Z0-9¿¡])""")
_SOFT = re.compile(r"[,;:—]\s+")
_ABBREV = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|vs|etc|e\.g|i\.e|a\.m|p\.m|No)\.\s+$", re.I)
# A sentence plainly ended at the end of the text so far (for the first piece): a word of two
# or more letters, then . ! or ? (not an ellipsis), closing quotes or brackets, white space.
_ENDED = re.compile(r"""(?<![.\w])[^\W\d_]{2,}[.!?]["')\]]*\s*$""")
_ABBREV_END = re.compile(
    r"\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|vs|etc|approx|Inc|Ltd|Co|No|Mt|Ave|Rd|Prof)\.\s*$", re.I
)


class SentenceSplitter:
    def __init__(self, min_chars: int = 4, soft_split_chars: int = 90) -> None:
        self.min_chars = min_chars
        self.soft_split_chars = soft_split_chars
        self._buf = ""
        self._first = True

    def push(self, text: str) -> list[str]:
        self._buf += text
        out: list[str] = []
        while True:
            piece = self._next_piece()
            if piece is None:
                return out
            self._first = False
            out.append(piece)

    def flush(self) -> list[str]:
        rest, self._buf = self._buf.strip(), ""
        return [rest] if rest else []

    def _next_piece(self) -> str | None:
        for m in _BOUNDARY.finditer(self._buf):
            head = self._buf[: m.end()]
            if len(head.strip()) < self.min_chars or _ABBREV.search(head):
                continue
            self._buf = self._buf[m.end() :]
            return head.strip()
        if self._first and len(self._buf.strip()) >= self.min_chars and self._plainly_ended():
            head, self._buf = self._buf, ""
            return head.strip()
        if len(self._buf) >= self.soft_split_chars:
            cut = None
            for m in _SOFT.finditer(self._buf):
                if m.start() >= self.min_chars:
                    cut = m.end()
            if cut is not None:
                head, self._buf = self._buf[:cut], self._buf[cut:]
                return head.strip()
        return None

    def _plainly_ended(self) -> bool:
        buf = self._buf
        return _ENDED.search(buf) is not None and _ABBREV_END.search(buf) is None
