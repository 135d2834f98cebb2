"""Turn-taking policy: when the caller's turn is over, and when they are interrupting us.

Pure decisions over what the session knows (transcript so far, speech durations, what the
agent is saying). The session asks; it never hard-codes a threshold itself, so each agent can be
tuned in its configuration.

Endpointing adapts to what was said: a recogniser closes an utterance after a few hundred ms of
silence, but people pause longer in the middle of reading out a phone or card number, after
"and"/"um", or while spelling a name. Then we wait longer before answering (up to a bound, so
nobody waits forever); a complete answer gets the normal, short wait.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[\w']+")
# One- or two-word acknowledgements people say while listening; not a bid for the turn.
BACKCHANNELS = frozenset(
    "mm mhm mmhm mm-hmm hmm hm uh-huh uhhuh uh huh yeah yep yes ok okay right sure alright aha "
    "ah oh um got it i see cool great".split()
)
# A turn that ends on one of these is plainly unfinished.
_TRAILING = frozenset(
    "and or but so because um uh er erm like the a an to of my is was at on in for with from "
    "then also which that it's its".split()
)
_NUMBER_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "double": "",
}  # fmt: skip
# Lengths at which a number read out is complete: national/E.164 phone numbers, cards.
_COMPLETE_DIGITS = frozenset({10, 11, 12, 15, 16})
# Complete for its kind but also the start of a longer one: a 7-digit local number (people
# read a 10-digit one as 3-3-4, so they pause after 3 and 6 digits, seldom after 7).
_PLAUSIBLE_DIGITS = frozenset({7})


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def trailing_digits(text: str) -> int:
    """How many digits the caller has read out at the end of ``text`` ("555 12", "five five")."""
    count = 0
    for token in reversed(re.findall(r"[\w']+|[^\w\s]", text.lower())):
        if token.isdigit():
            count += len(token)
        elif token in _NUMBER_WORDS:
            count += len(_NUMBER_WORDS[token]) or 0
        elif token in {"-", ",", ".", "(", ")", "+"}:
            continue
        else:
            break
    return count


def _spelling(words: list[str]) -> bool:
    """Ends in a run of single letters: "s m i" (a name being spelled)."""
    run = 0
    for w in reversed(words):
        if len(w) == 1 and w.isalpha():
            run += 1
        else:
            break
    return run >= 2


@dataclass(frozen=True, slots=True)
class TurnPolicy:
    # Extra wait after the recogniser's end of utterance when the turn looks complete.
    endpointing_ms: int = 0
    # Extra wait when it plainly is not (trailing "and", a number half read out, spelling).
    unfinished_wait_ms: int = 2000
    # Wait after a number that has a plausible whole length but could go on (7 digits).
    number_wait_ms: int = 600
    # Never wait longer than this after an end of utterance.
    max_endpoint_ms: int = 3000
    # Caller speech during agent speech must last this long to pause the agent: shorter
    # bursts are clicks and coughs.
    barge_in_min_speech_ms: int = 120
    # Speech this long is an interruption whatever its words (backchannels are short).
    barge_in_sure_ms: int = 700
    # After short speech over the agent ends, wait this long for its words (a recogniser that
    # gives no interim results needs ~silence + transcription time), then carry on speaking.
    barge_in_resume_wait_ms: int = 900
    # With a transcript: this many words that are not a backchannel, nor an echo of the
    # agent's own words (speakerphones), make it an interruption.
    barge_in_min_words: int = 2
    # Speech over the agent that stops within this long, followed by ``backchannel_gap_ms``
    # of quiet (20 dB under the sound, or webrtcvad's silence), with no words yet or only
    # "mm-hmm"-like ones, is a backchannel by its shape: the agent carries on at once instead
    # of waiting for the final transcript. 80 ms outlasts the closure of a stop consonant
    # inside a word; if the caller goes on, the next voiced frame pauses the agent again.
    backchannel_max_ms: int = 600
    backchannel_gap_ms: int = 80
    # Caller speech shorter than this, with no words, does not start the filler timer (a cough).
    filler_min_speech_ms: int = 450  # (webrtcvad adds ~100 ms of hangover to any sound)

    def unfinished(self, text: str) -> bool:
        stripped = text.strip()
        if not stripped:
            return False
        if stripped.endswith((",", "...", "…", "-")):
            return True
        words = _words(stripped)
        if not words:
            return False
        if words[-1] in _TRAILING and not stripped.endswith(("?", "!")):
            return True
        # Three or more digits read out, short of a whole phone or card number: more is coming.
        # ("at 10" is a time, not the start of a number.)
        digits = trailing_digits(stripped)
        if digits >= 3 and digits not in _COMPLETE_DIGITS | _PLAUSIBLE_DIGITS:
            return True
        return _spelling(words)

    def endpoint_delay_ms(self, text: str) -> int:
        """How long to wait, after the recogniser closed an utterance, before answering."""
        if self.unfinished(text):
            wait = self.unfinished_wait_ms
        elif trailing_digits(text.strip()) in _PLAUSIBLE_DIGITS:
            wait = max(self.endpointing_ms, self.number_wait_ms)
        else:
            wait = self.endpointing_ms
        return min(wait, self.max_endpoint_ms)

    def is_backchannel(self, text: str) -> bool:
        words = _words(text)
        return 0 < len(words) <= 2 and all(w in BACKCHANNELS for w in words)

    def is_echo(self, heard: str, agent_text: str) -> bool:
        """Words the caller's line carried back that are the agent's own (speakerphone echo):
        most of them occur, in order, in what the agent is saying."""
        words = _words(heard)
        if not words or not agent_text:
            return False
        agent = _words(agent_text)
        pos, hits = 0, 0
        for w in words:
            try:
                pos = agent.index(w, pos) + 1
                hits += 1
            except ValueError:
                continue
        return hits >= max(1, int(len(words) * 0.8))

    def is_interruption(self, speech_ms: float, words: str | None, agent_text: str) -> bool:
        """Decide a pending barge-in. ``words``: the recogniser's transcript of the caller's
        speech so far, or None when it gives none before the end of the utterance."""
        if words:
            real = _words(words)
            if (
                len(real) >= self.barge_in_min_words
                and not self.is_backchannel(words)
                and not self.is_echo(words, agent_text)
            ):
                return True
            if self.is_echo(words, agent_text):
                return False
        return speech_ms >= self.barge_in_sure_ms
