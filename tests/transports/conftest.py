"""The embedded local providers, warm, shared by the Twilio transport tests of a module."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.config import Settings
from app.providers import registry
from app.runtime.context import Providers


@pytest.fixture(scope="module")
def providers() -> Providers:
    # With no API keys set these are the embedded local providers (whisper, scripted, espeak).
    built = registry.build_providers(Settings())
    assert (built.stt.name, built.llm.name, built.tts.name) == ("whisper", "scripted", "espeak")
    asyncio.run(registry.warm(built))
    return built


@pytest.fixture(autouse=True)
def own_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's server opens its own default SQLite file (``data/`` under the working
    directory): admission slots and spent tokens of one test must not fill another's."""
    monkeypatch.chdir(tmp_path)
