"""``set_outcome``: the agent records how a call went (for campaigns and the call record).

The session executes tools; the spec lives with the other tool specs (``app.agents.tools``)
and this module gives the handler it runs:
``apply_outcome(store, call_id, outcome, summary)``. ``do_not_call`` also puts the callee's
number on the do-not-call list, so no campaign dials it again.
"""

from __future__ import annotations

import re
import time
from typing import Any

from app.agents.tools import OUTCOMES, SET_OUTCOME  # noqa: F401 - the tool this runs
from app.logs import bind_call, event, get_logger

log = get_logger(__name__)

_SLUG = re.compile(r"^[a-z][a-z0-9_]{0,63}$")



async def apply_outcome(
    store: Any, call_id: str, outcome: str, summary: str | None = None,
    now: float | None = None,
) -> str:
    """Run the tool; returns the text the model sees as the tool result."""
    outcome = (outcome or "").strip().lower()
    if outcome not in OUTCOMES and not _SLUG.match(outcome):
        return f"Unknown outcome. Use one of: {', '.join(OUTCOMES)}."
    now = time.time() if now is None else now
    summary = summary[:1000] if summary else None
    with bind_call(call_id):
        row = await store.record_outcome(call_id, outcome, summary, now)
        if row is None:
            event(log, "outcome_unknown_call", level=30, outcome=outcome)
            return "Could not record the outcome: unknown call."
        if outcome == "do_not_call" and row["direction"] == "outbound" and row["to_number"]:
            await store.campaigns.add_dnc([row["to_number"]], now=now, reason="asked on a call")
        event(log, "outcome_set", outcome=outcome, summary_chars=len(summary or ""))
    return f"Outcome recorded: {outcome}."
