"""From an agent profile to what a call runs: its ``AgentScript`` and its TTS voice."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from app.agents.config import Agent
from app.agents.tools import SPECS
from app.config import AgentSettings
from app.core.script import AgentScript
from app.core.turns import TurnPolicy


def script_for(agent: Agent, base: AgentSettings) -> AgentScript:
    """The profile over the environment's script, field by field: what the profile leaves out
    is what the environment says. A recording announcement goes before the greeting, so consent
    is asked before anything else is said."""
    script = base.script()
    greeting = agent.greeting or script.greeting
    if agent.recording.enabled:
        greeting = f"{agent.recording.announcement} {greeting}"
    return dataclasses.replace(
        script,
        system_prompt=agent.prompt or script.system_prompt,
        greeting=greeting,
        goodbye=agent.goodbye or script.goodbye,
        tools=tuple(SPECS[name] for name in dict.fromkeys(agent.tools)),
        policy=policy_for(agent, script.policy),
    )


def policy_for(agent: Agent, base: TurnPolicy) -> TurnPolicy:
    """``base`` (the environment's turn policy) with the knobs the profile sets."""
    overrides: dict[str, Any] = {
        "endpointing_ms": agent.endpointing.ms,
        "unfinished_wait_ms": agent.endpointing.unfinished_ms,
        "max_endpoint_ms": agent.endpointing.max_ms,
        "barge_in_min_speech_ms": agent.barge_in.min_speech_ms,
        "barge_in_sure_ms": agent.barge_in.sure_ms,
        "barge_in_min_words": agent.barge_in.min_words,
    }
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def with_voice(tts: Any, voice: str | None) -> Any:
    """``tts`` speaking in ``voice``: the provider's own ``with_voice`` if it has one, else a
    shallow copy with its voice attribute set (clients and caches stay shared)."""
    if not voice:
        return tts
    if callable(getattr(tts, "with_voice", None)):
        return tts.with_voice(voice)
    for attr in ("voice_id", "voice"):
        if hasattr(tts, attr):
            clone = copy.copy(tts)
            setattr(clone, attr, voice)
            return clone
    return tts
