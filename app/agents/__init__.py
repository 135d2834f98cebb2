"""Agent profiles: the versioned TOML file, its schema, and what a call runs from a profile.

``load_settings`` is how a process reads its settings: the environment (``app.config``), then
the agents file it names, validated (a ``ConfigError`` naming file, key and line).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from app.config import Settings


def with_agents(settings: Settings) -> Settings:
    """``settings`` with the agent profiles of ``AGENTS_FILE`` loaded (unchanged without it)."""
    cc = settings.callcentre
    if not cc.agents_file or cc.agents is not None:
        return settings
    from app.agents.config import load_agents

    book = load_agents(cc.agents_file)
    return dataclasses.replace(settings, callcentre=dataclasses.replace(cc, agents=book))


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    return with_agents(Settings.from_env(env))
