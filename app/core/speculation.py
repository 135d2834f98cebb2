"""A reply started before the caller's turn is confirmed (speculative, or "preemptive").

When the recogniser says the caller has probably finished, the session asks the model for the
reply to the words so far and lets speech synthesis start on its first sentences, but nothing of
it is played, no tool is run and nothing is added to the history: the model's and the speech's
events are held here. When the turn is confirmed with the same words (after normalisation) the
session adopts them and the held events are replayed as if they had just arrived; otherwise the
request and its speech are cancelled and the tokens it cost are counted as wasted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from app.core.events import (
    Event,
    LlmDone,
    LlmFailed,
    LlmText,
    LlmTool,
    TtsAudio,
    TtsDone,
    TtsFailed,
)
from app.core.playback import Utterance
from app.core.providers import LlmRequest, LlmUsage
from app.core.text import SentenceSplitter

_WORDS = re.compile(r"[a-z0-9']+")
CHARS_PER_TOKEN = 4.0  # the estimate for a request cancelled before the model reported usage


def same_words(a: str, b: str) -> bool:
    """Do two transcripts say the same thing (case, punctuation and spacing aside)?"""
    return _WORDS.findall(a.lower()) == _WORDS.findall(b.lower())


def request_chars(request: LlmRequest) -> int:
    return len(request.system) + sum(len(m.content) for m in request.messages)


@dataclass(slots=True)
class Speculation:
    id: int  # the model request's id (``StartLlm.turn``)
    text: str  # the caller's words it answers
    started_at: float
    prompt_chars: int
    vad_at_ms: float = 0.0  # our VAD's stream offset when it started (voice after it: go on)
    reply: list[str] = field(default_factory=list)  # the model's text so far
    splitter: SentenceSplitter = field(default_factory=SentenceSplitter)
    utterances: dict[int, Utterance] = field(default_factory=dict)  # synthesised, not played
    speech: list[Event] = field(default_factory=list)  # held TTS events, in arrival order
    model: list[Event] = field(default_factory=list)  # held tool calls and the stream's end
    first_token_at: float | None = None
    usage: LlmUsage | None = None  # known once the model finished
    done: bool = False

    def matches(self, text: str) -> bool:
        return same_words(self.text, text)

    def owns(self, event: Event) -> bool:
        match event:
            case LlmText(turn) | LlmTool(turn) | LlmDone(turn) | LlmFailed(turn):
                return turn == self.id
            case TtsAudio(utt) | TtsDone(utt) | TtsFailed(utt):
                return utt in self.utterances
        return False

    def hold(self, event: Event, now: float) -> list[str]:
        """Keep one of its events. Returns sentences of the reply ready for synthesis."""
        match event:
            case LlmText(_, text):
                if self.first_token_at is None:
                    self.first_token_at = now
                self.reply.append(text)
                return self.splitter.push(text)
            case LlmDone(_, usage):
                self.done, self.usage = True, usage
                self.model.append(event)
                return self.splitter.flush()
            case LlmTool() | LlmFailed():
                self.done = self.done or isinstance(event, LlmFailed)
                self.model.append(event)
            case _:
                self.speech.append(event)
        return []

    def wasted(self) -> tuple[int, int]:
        """Input and output tokens it cost, for a speculation thrown away: the model's own count
        when it finished, else an estimate from the characters sent and received."""
        if self.usage is not None and (self.usage.input_tokens or self.usage.output_tokens):
            return self.usage.input_tokens, self.usage.output_tokens
        out_chars = sum(len(t) for t in self.reply)
        return (
            round(self.prompt_chars / CHARS_PER_TOKEN),
            round(out_chars / CHARS_PER_TOKEN),
        )
