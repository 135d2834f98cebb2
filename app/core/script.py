"""The agent's script: its prompt, fixed phrases, tools and limits, and the model request
built from it for a call (prompt variables filled in, history in the shape models accept)."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from app.core.providers import CallInfo, LlmRequest, Message, ToolSpec
from app.core.turns import TurnPolicy

END_CALL = ToolSpec(
    name="end_call",
    description="End the phone call. Say goodbye first, in the same reply.",
    parameters={"type": "object", "properties": {"reason": {"type": "string"}}},
)
# Offered only to agents with a transfer target (an agent profile's [transfer] table).
TRANSFER_CALL = ToolSpec(
    name="transfer_call",
    description=(
        "Transfer the caller to a human colleague. In the same reply, tell the caller you are "
        "transferring them. Give a one-sentence summary for the colleague."
    ),
    parameters={
        "type": "object",
        "properties": {
            "reason": {"type": "string", "description": "why the caller needs a human"},
            "summary": {"type": "string", "description": "one sentence briefing the colleague"},
        },
    },
)
# Tools that end the conversation: no model turn follows them.
TERMINAL_TOOLS = {"end_call", "transfer_call"}


@dataclass(frozen=True, slots=True)
class AgentScript:
    """What the agent says on its own, and its limits. Built from settings by the runner."""

    system_prompt: str
    greeting: str
    goodbye: str
    filler: str
    fallback: str
    idle_prompt: str
    idle_timeout_s: float = 12.0
    max_call_s: float = 1800.0
    # "One moment" this long after the caller stopped speaking if nothing of the answer plays
    # by then, whatever the recogniser and the model are doing.
    llm_filler_after_s: float = 1.0
    llm_giveup_after_s: float = 3.5
    # Said when a tool the model called takes longer than ``tool_filler_after_s`` and the
    # agent is silent; not for tools that act on the line itself (keys to an IVR).
    tool_filler: str = "Let me check that for you."
    tool_filler_after_s: float = 1.0
    silent_tools: frozenset[str] = frozenset({"send_digits"})
    # Start the model on the caller's words when the recogniser says they have probably
    # finished, before the turn is confirmed (the audio waits for the confirmation).
    speculate: bool = True
    dtmf_timeout_s: float = 2.0
    # A keypad entry reaches the model in one turn up to this many keys (fields allow 32).
    keypad_max_digits: int = 32
    # Never hang on a goodbye whose mark is lost: end this long after it starts ...
    goodbye_grace_s: float = 10.0
    # ... or after a reply that ends the call with a tool (it may be a few sentences long).
    ending_reply_grace_s: float = 30.0
    max_history_messages: int = 60
    # No transfer_call by default: with nobody to transfer to, it would hang up on the caller.
    tools: tuple[ToolSpec, ...] = (END_CALL,)
    policy: TurnPolicy = field(default_factory=TurnPolicy)

    # Said instead of the greeting when a call goes on over a new stream after its stream
    # dropped (a crash or a deploy of the server that held it).
    recovery: str = "Sorry, we were cut off for a moment. I'm still here, please go on."

    def cached_phrases(self) -> tuple[str, ...]:
        return (
            self.greeting,
            self.goodbye,
            self.filler,
            self.fallback,
            self.idle_prompt,
            self.recovery,
            self.tool_filler,
        )

    def resumed(self) -> AgentScript:
        """This script for a call that goes on after its stream dropped: the recovery line
        instead of a second hello."""
        return replace(self, greeting=self.recovery)


def build_request(script: AgentScript, call: CallInfo, history: Sequence[Message]) -> LlmRequest:
    return LlmRequest(
        system=system_prompt(script, call),
        messages=tuple(normalise(list(history[-script.max_history_messages :]))),
        tools=script.tools,
        call=call,
    )


def system_prompt(script: AgentScript, call: CallInfo) -> str:
    """The agent's prompt with this call's variables filled in, plus the call's own
    instructions (an outbound call's ``--prompt``) when it has them."""
    prompt = fill(script.system_prompt, call.variables)
    extra = call.variables.get("instructions")
    return f"{prompt}\n\nFor this call: {extra}" if extra else prompt


def fill(template: str, variables: Mapping[str, str]) -> str:
    """Substitute ``{name}`` placeholders with per-call variables; unknown ones stay as they are."""
    if not variables or "{" not in template:
        return template

    class _Keep(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    try:
        return string.Formatter().vformat(template, (), _Keep(variables))
    except (ValueError, IndexError):
        return template


def normalise(messages: list[Message]) -> list[Message]:
    """Models want alternating roles starting with the user: merge neighbours of one role and
    drop a leading assistant message (the greeting is in the system prompt's world)."""
    out: list[Message] = []
    for m in messages:
        if not m.content and not m.tool_calls and not m.tool_results:
            continue
        if out and out[-1].role == m.role:
            prev = out[-1]
            out[-1] = Message(
                m.role,
                (prev.content + " " + m.content).strip(),
                tool_calls=prev.tool_calls + m.tool_calls,
                tool_results=prev.tool_results + m.tool_results,
                interrupted=m.interrupted,
            )
        else:
            out.append(m)
    while out and out[0].role != "user":
        out.pop(0)
    return out
