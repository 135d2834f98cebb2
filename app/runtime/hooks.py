"""What a feature layer adds to one call, declared rather than wrapped around the runner.

The call-centre layer (agent profiles) gives a call its tools, takes keypad keys while it
collects a field, runs work beside the session (start a recording) and learns when the call is
over (the post-call job). The runner owns every task it starts for these and cancels them when
the call ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.core.providers import CallInfo, ToolCall

ToolHandler = Callable[[CallInfo, ToolCall], Awaitable[None]]


@dataclass(slots=True)
class CallHooks:
    # Tool name -> handler, run when the model calls it (terminal tools end the call as well).
    tools: Mapping[str, ToolHandler] = field(default_factory=dict)
    # A caller's keypad key before the session sees it; True when the hook took it.
    keypad: Callable[[str], bool] | None = None
    # Started with the call, beside the session; cancelled when the call ends.
    started: Callable[[], Awaitable[None]] | None = None
    # Called once when the call is over, with the runner (its transcript, end reason, ...).
    finished: Callable[[Any], None] | None = None


@dataclass(frozen=True, slots=True)
class Resumed:
    """A call that goes on over a new stream after its stream dropped: what it had so far."""

    history: tuple[Any, ...]  # Message: the conversation as the caller heard it
    keypad_fields: tuple[str, ...] = ()  # names of the keypad fields already collected


@dataclass(slots=True)
class CallPlan:
    """Everything a call's runner is made from: what ``AppContext.new_runner`` builds, the same
    way for every call, whether or not a feature layer adjusted it."""

    call: CallInfo
    sink: Any  # AudioSink, possibly wrapped by a feature (a transfer instead of a hang-up)
    script: Any  # AgentScript
    providers: Any  # app.runtime.context.Providers
    hooks: CallHooks = field(default_factory=CallHooks)
    history: tuple[Any, ...] = ()  # Message: the conversation so far, for a continued call
    bind: Callable[[Any], None] | None = None  # told the runner once it exists
