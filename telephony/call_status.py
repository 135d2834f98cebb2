"""Twilio call status and answering-machine rules. Pure: no I/O, no clock.

Status callbacks are retried by Twilio and may arrive out of order, so a status only ever moves
forward: ``queued < initiated < ringing < in-progress < (completed | busy | no-answer | failed |
canceled)``. A late ``ringing`` after ``completed`` is ignored; a repeated callback changes
nothing.
"""

from __future__ import annotations

from typing import Literal

FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
_RANK = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3}
KNOWN_STATUSES = frozenset(_RANK) | FINAL_STATUSES

# Results after which a campaign contact is tried again (with backoff, up to max attempts).
RETRYABLE_RESULTS = frozenset({"busy", "no-answer", "failed"})

MACHINE_ANSWERS = frozenset({"machine_end_beep", "machine_end_silence", "machine_end_other"})
ANSWERED_BY = frozenset({"human", "machine_start", "fax", "unknown"}) | MACHINE_ANSWERS

AmdAction = Literal["agent", "voicemail", "hangup"]


def rank(status: str) -> int:
    return 4 if status in FINAL_STATUSES else _RANK.get(status, -1)


def is_final(status: str) -> bool:
    return status in FINAL_STATUSES


def should_apply(current: str | None, new: str) -> bool:
    """Whether a callback with ``new`` status moves a call whose stored status is ``current``."""
    if new not in KNOWN_STATUSES:
        return False
    if current is None:
        return True
    return rank(new) > rank(current)


def amd_action(answered_by: str, fax_action: AmdAction, unknown_action: AmdAction) -> AmdAction:
    """What to do once asynchronous answering-machine detection has decided.

    ``machine_end_*``: the greeting ended (beep, silence or otherwise): leave the voicemail
    message now. ``human`` (and ``machine_start``, which DetectMessageEnd does not send as a
    final answer) lets the agent talk. ``fax`` and ``unknown`` follow configuration.
    """
    if answered_by in MACHINE_ANSWERS:
        return "voicemail"
    if answered_by == "fax":
        return fax_action
    if answered_by == "unknown":
        return unknown_action
    return "agent"


def contact_result(status: str, answered_by: str | None) -> str:
    """The result a finished call gives its campaign contact."""
    if status == "completed":
        if answered_by in MACHINE_ANSWERS:
            return "voicemail"
        if answered_by == "fax":
            return "fax"
        return "answered"
    return status
