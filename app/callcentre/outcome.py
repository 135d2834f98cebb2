"""After the call: an outcome label and a short summary, for the record and the webhook.

A cloud model is asked for a small JSON object. The scripted agent is deterministic, so its
outcome is recomputed from the conversation the same way it ran the call. Whatever the model
says, facts win: a call that was transferred is "transferred".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.core.providers import LlmRequest, Message, TextDelta
from app.core.records import TranscriptLine
from app.logs import event, get_logger

log = get_logger(__name__)

OUTCOMES = (
    "booked", "moved", "cancelled", "answered", "transferred", "callback_requested",
    "declined", "no_response", "abandoned", "other",
)  # fmt: skip
EXTRACT_TIMEOUT_S = 20.0
MAX_SUMMARY = 500
SYSTEM = (
    "You read the transcript of a phone call between a caller and an AI agent. Reply with "
    'only a JSON object: {"outcome": one of ' + ", ".join(OUTCOMES) + ', "summary": one or '
    "two plain sentences on what the caller wanted and what was done}."
)


@dataclass(frozen=True, slots=True)
class Outcome:
    outcome: str
    summary: str
    source: str  # "model" | "scripted" | "facts" | "agent" (its set_outcome on the call)


async def extract(
    llm: Any,
    transcript: Sequence[TranscriptLine],
    end_reason: str | None,
    transfer_result: str | None = None,
) -> Outcome:
    facts = from_facts(transcript, end_reason, transfer_result)
    if not any(line.role == "caller" for line in transcript):
        return facts
    found: Outcome | None = None
    if getattr(llm, "name", "") == "scripted":
        found = scripted(transcript)
    else:
        try:
            async with asyncio.timeout(EXTRACT_TIMEOUT_S):
                found = await _ask_model(llm, transcript)
        except Exception as exc:  # a summary must never stop the record or the webhook
            event(log, "outcome_extraction_failed", error=type(exc).__name__)
    if found is None:
        return facts
    if transfer_result == "transferred":
        return Outcome("transferred", found.summary, found.source)
    return found


def from_facts(
    transcript: Sequence[TranscriptLine], end_reason: str | None, transfer_result: str | None
) -> Outcome:
    turns = sum(1 for line in transcript if line.role == "caller")
    if transfer_result == "transferred":
        label = "transferred"
    elif turns == 0:
        label = "no_response"
    elif end_reason == "caller hung up":
        label = "abandoned"
    else:
        label = "other"
    why = end_reason or "unknown"
    return Outcome(label, f"Call with {turns} caller turn(s); it ended: {why}.", "facts")


def scripted(transcript: Sequence[TranscriptLine], today: dt.date | None = None) -> Outcome | None:
    """Replay the scripted receptionist over the call and keep its last outcome."""
    from app.providers import scripted as agent

    state = agent.State()
    asked, last, when = "", None, ""
    for line in transcript:
        if line.role == "agent":
            # A reply reaches the transcript sentence by sentence: the question the caller
            # answers ("Just to confirm: ... Is that right?") spans all of them.
            asked = f"{asked} {line.text}".strip()
            continue
        state = agent.step(state, line.text, asked, today or dt.date.today())
        asked = ""
        if state.outcome is not None:
            last, when = state.outcome, state.done_when
    if last is None:
        return None
    who = f" for {state.name}" if state.name else ""
    summaries = {
        "booked": f"Appointment booked{who} {when}.",
        "moved": f"Appointment moved{who} to {when}.",
        "cancelled": f"Appointment{who} {when} cancelled.",
        "declined": "The caller declined the proposed appointment.",
    }
    return Outcome(last, summaries[last].replace("  ", " "), "scripted")


async def _ask_model(llm: Any, transcript: Sequence[TranscriptLine]) -> Outcome | None:
    text = "\n".join(
        f"{'Caller' if line.role == 'caller' else 'Agent'}: {line.text}" for line in transcript
    )
    request = LlmRequest(system=SYSTEM, messages=(Message("user", text),))
    parts = [item.text async for item in llm.stream(request) if isinstance(item, TextDelta)]
    return parse("".join(parts))


def parse(reply: str) -> Outcome | None:
    match = re.search(r"\{.*\}", reply, re.DOTALL)
    if match is None:
        return None
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    label = str(data.get("outcome", "")).strip().lower()
    summary = " ".join(str(data.get("summary", "")).split())[:MAX_SUMMARY]
    return Outcome(label if label in OUTCOMES else "other", summary, "model")
