"""Agent profiles per number and per campaign, from a versioned TOML file (``AGENTS_FILE``).

Each ``[agents.NAME]`` table sets what differs from the environment's defaults: prompt, voice,
greeting, tools, language, endpointing and barge-in, transfer, recording and keypad settings.
A call gets its agent from a ``<Parameter name="agent">``, else its campaign, else the dialled
number, else ``default``. The file is validated once at start-up; every error names the file,
the key and its line, so a typo never surfaces as a strange call hours later.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.agents.locate import key_lines, line_of
from app.config import ConfigError
from telephony.numbers import is_e164

VERSION = 1
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ToolName = Literal["end_call", "transfer_call", "collect_digits", "send_digits", "set_outcome"]


class AgentConfigError(ConfigError):
    """The agents file is unusable. The message names the file, the key and the line."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _e164(value: str) -> str:
    if not is_e164(value):
        raise ValueError("must be an E.164 phone number like +15551234567")
    return value


class Endpointing(_Model):
    ms: int | None = Field(None, ge=0, le=5000)  # extra wait when the turn looks complete
    unfinished_ms: int | None = Field(None, ge=0, le=10_000)  # when it plainly is not
    max_ms: int | None = Field(None, ge=0, le=10_000)  # never wait longer than this


class BargeIn(_Model):
    min_speech_ms: int | None = Field(None, ge=0, le=5000)
    sure_ms: int | None = Field(None, ge=0, le=10_000)
    min_words: int | None = Field(None, ge=1, le=20)


class Transfer(_Model):
    number: str
    # cold: redirect the call to <Dial>; warm: brief the colleague first, then bridge.
    mode: Literal["cold", "warm"] = "cold"
    caller_id: str | None = None  # warm: our number the colleague's phone shows
    ring_timeout_s: int = Field(30, ge=5, le=120)
    hold_music_url: str | None = None  # warm: what the caller hears while waiting

    @field_validator("number")
    @classmethod
    def _number(cls, value: str) -> str:
        return _e164(value)

    @field_validator("caller_id")
    @classmethod
    def _caller_id(cls, value: str | None) -> str | None:
        return None if value is None else _e164(value)


class Recording(_Model):
    enabled: bool = False
    announcement: str = Field(
        "This call may be recorded for quality and training.", min_length=1, max_length=300
    )
    channels: Literal["mono", "dual"] = "dual"


class Digits(_Model):
    inter_digit_timeout_s: float = Field(5.0, ge=1.0, le=30.0)
    max_digits: int = Field(20, ge=1, le=32)


class Agent(_Model):
    numbers: list[str] = []  # dialled numbers (ours) that select this agent
    campaigns: list[str] = []  # campaign ids or names that select it
    prompt: str | None = Field(None, min_length=1)
    greeting: str | None = Field(None, min_length=1)
    goodbye: str | None = Field(None, min_length=1)
    voice: str | None = Field(None, min_length=1)  # TTS voice id (ElevenLabs) or eSpeak voice
    language: str = Field("en", pattern=r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")
    tools: list[ToolName] = ["end_call"]
    endpointing: Endpointing = Endpointing()
    barge_in: BargeIn = BargeIn()
    transfer: Transfer | None = None
    recording: Recording = Recording()
    digits: Digits = Digits()

    @field_validator("numbers")
    @classmethod
    def _numbers(cls, values: list[str]) -> list[str]:
        return [_e164(v) for v in values]


class AgentsFile(_Model):
    version: Literal[1]
    default: str
    agents: dict[str, Agent] = Field(min_length=1)


class AgentBook:
    """The validated file, and the choice of agent for a call."""

    def __init__(self, source: str, parsed: AgentsFile) -> None:
        self.source = source
        self.default = parsed.default
        self.agents: dict[str, Agent] = dict(parsed.agents)
        self._by_number = {n: name for name, a in self.agents.items() for n in a.numbers}
        self._by_campaign = {c: name for name, a in self.agents.items() for c in a.campaigns}

    def select(
        self,
        to_number: str | None = None,
        campaign: str | None = None,
        parameter: str | None = None,
    ) -> str:
        """The agent for a call: an explicit ``<Parameter name="agent">`` wins, then the
        campaign, then the dialled number, then the default. Unknown names fall through."""
        if parameter and parameter in self.agents:
            return parameter
        if campaign and campaign in self._by_campaign:
            return self._by_campaign[campaign]
        if to_number and to_number in self._by_number:
            return self._by_number[to_number]
        return self.default

    def get(self, name: str) -> Agent:
        return self.agents[name]


def load_agents(path: str | Path) -> AgentBook:
    """Read and validate an agents file. Raises ``AgentConfigError``."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise AgentConfigError(f"{name}: cannot read the agents file ({why})") from None
    return parse_agents(text, name)


def parse_agents(text: str, source: str = "agents.toml") -> AgentBook:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message carries line and column
        raise AgentConfigError(f"{source}: invalid TOML: {exc}") from None
    lines = key_lines(text)

    def fail(path: tuple[str, ...], message: str) -> AgentConfigError:
        line = line_of(lines, path)
        where = f", line {line}" if line is not None else ""
        key = ".".join(path) or "(top level)"
        return AgentConfigError(f"{source}{where}: {key}: {message}")

    version = raw.get("version")
    if version != VERSION:  # before the schema: a newer file's keys would only confuse
        raise fail(("version",), f"must be {VERSION} (this server reads version {VERSION})")
    try:
        parsed = AgentsFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = tuple(str(p) for p in first["loc"] if not isinstance(p, int))
        raise fail(path, _message(first)) from None
    _check_links(parsed, fail)
    return AgentBook(source, parsed)


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key (check the spelling)"
    if error["type"] == "missing":
        return "is required"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def _check_links(parsed: AgentsFile, fail: Any) -> None:
    """What one key alone cannot say: names, the default, and no number or campaign twice."""
    if parsed.default not in parsed.agents:
        raise fail(("default",), f"names no agent (agents: {', '.join(sorted(parsed.agents))})")
    numbers: dict[str, str] = {}
    campaigns: dict[str, str] = {}
    for name, agent in parsed.agents.items():
        if not _NAME.match(name):
            raise fail(("agents", name), "agent names are lower-case letters, digits, - and _")
        if "transfer_call" in agent.tools and agent.transfer is None:
            raise fail(("agents", name, "tools"), "transfer_call needs a [transfer] table")
        for number in agent.numbers:
            if number in numbers:
                raise fail(("agents", name, "numbers"), f"number also used by {numbers[number]}")
            numbers[number] = name
        for campaign in agent.campaigns:
            if campaign in campaigns:
                raise fail(
                    ("agents", name, "campaigns"), f"campaign also used by {campaigns[campaign]}"
                )
            campaigns[campaign] = name
