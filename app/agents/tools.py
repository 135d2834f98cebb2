"""The call-centre tools the model may be offered, as JSON-schema ``ToolSpec``s.

``end_call`` and ``transfer_call`` end the conversation (the session treats them as terminal);
``collect_digits`` and ``send_digits`` let it carry on.
"""

from __future__ import annotations

from app.core.providers import ToolSpec
from app.core.script import END_CALL, TRANSFER_CALL

# Outcomes the agent records on a call (and its campaign contact) with ``set_outcome``.
OUTCOMES = (
    "interested",
    "not_interested",
    "appointment_booked",
    "callback_requested",
    "wrong_number",
    "do_not_call",
    "voicemail",
    "other",
)
SET_OUTCOME = ToolSpec(
    name="set_outcome",
    description=(
        "Record the outcome of this call once it is clear, before saying goodbye. Use "
        "do_not_call when the person asks not to be called again."
    ),
    parameters={
        "type": "object",
        "properties": {
            "outcome": {"type": "string", "enum": list(OUTCOMES)},
            "summary": {"type": "string", "description": "One sentence: what was agreed."},
        },
        "required": ["outcome"],
    },
)


COLLECT_DIGITS = ToolSpec(
    name="collect_digits",
    description=(
        "Collect a number the caller types on the keypad (account number, PIN, date of birth). "
        "In the same reply ask them to enter it followed by the pound key. The digits arrive "
        "as the caller's next message, like '[keypad: 1 2 3 4 #]'."
    ),
    parameters={
        "type": "object",
        "properties": {
            "field": {"type": "string", "description": "what is being collected"},
            "max_digits": {"type": "integer", "minimum": 1, "maximum": 32},
            "terminator": {"type": "string", "enum": ["#", "*"]},
        },
        "required": ["field"],
    },
)
SEND_DIGITS = ToolSpec(
    name="send_digits",
    description=(
        "Press keys on the phone line, to navigate an automated menu (IVR) you are talking "
        "to. Digits 0-9, * and #; 'w' waits half a second. The menu's next prompt follows."
    ),
    parameters={
        "type": "object",
        "properties": {"digits": {"type": "string", "pattern": "^[0-9*#wW]{1,64}$"}},
        "required": ["digits"],
    },
)

SPECS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (END_CALL, TRANSFER_CALL, COLLECT_DIGITS, SEND_DIGITS, SET_OUTCOME)
}
