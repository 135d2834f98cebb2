"""Turn-taking policy: when the caller's turn is over, and when they are interrupting us.

Pure decisions over what the session knows (transcript so far, speech durations). The session
asks; it never hard-codes a threshold itself, so agents can be tuned per configuration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[\w']+")
# One-word acknowledgements people say while listening; they are not a bid for the turn.
BACKCHANNELS = frozenset(
    "mm mhm mmhm mm-hmm uh-huh uhhuh hmm hm yeah yep yes ok okay right sure alright aha ah oh "
    "uh um got it i see".split()
)


@dataclass(frozen=True, slots=True)
class TurnPolicy:
    # Extra wait after the recogniser's end of utterance before the agent answers.
    endpointing_ms: int = 0
    # Caller speech during agent speech must last this long to count as an interruption:
    # shorter bursts are coughs, clicks or line echo.
    barge_in_min_speech_ms: int = 250

    def endpoint_delay_ms(self, text: str) -> int:
        """How long to wait, after the recogniser closed an utterance, before answering."""
        return self.endpointing_ms

    def is_backchannel(self, text: str) -> bool:
        words = [w.lower() for w in _WORD.findall(text)]
        return 0 < len(words) <= 2 and all(w in BACKCHANNELS for w in words)

    def should_barge_in(self, speech_ms: float) -> bool:
        return speech_ms >= self.barge_in_min_speech_ms
