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
    """The profile over the environment's defaults. A recording announcement goes before the
    greeting, so consent is asked before anything else is said."""
    greeting = agent.greeting or base.greeting
    if agent.recording.enabled:
        greeting = f"{agent.recording.announcement} {greeting}"
    return AgentScript(
        system_prompt=agent.prompt or base.system_prompt,
        greeting=greeting,
        goodbye=agent.goodbye or base.goodbye,
        filler=base.filler,
        fallback=base.fallback,
        idle_prompt=base.idle_prompt,
        idle_timeout_s=base.idle_timeout_s,
        max_call_s=base.max_call_s,
        llm_filler_after_s=base.llm_filler_after_s,
        llm_giveup_after_s=base.llm_giveup_after_s,
        tools=tuple(SPECS[name] for name in dict.fromkeys(agent.tools)),
        policy=policy_for(agent, base),
    )


def policy_for(agent: Agent, base: AgentSettings) -> TurnPolicy:
    wanted: dict[str, Any] = {
        "endpointing_ms": agent.endpointing.ms
        if agent.endpointing.ms is not None
        else base.endpointing_ms,
        "unfinished_wait_ms": agent.endpointing.unfinished_ms,
        "max_endpoint_ms": agent.endpointing.max_ms,
        "barge_in_min_speech_ms": agent.barge_in.min_speech_ms
        if agent.barge_in.min_speech_ms is not None
        else base.barge_in_min_speech_ms,
        "barge_in_sure_ms": agent.barge_in.sure_ms,
        "barge_in_min_words": agent.barge_in.min_words,
    }
    known = {f.name for f in dataclasses.fields(TurnPolicy)}
    return TurnPolicy(**{k: v for k, v in wanted.items() if v is not None and k in known})


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
