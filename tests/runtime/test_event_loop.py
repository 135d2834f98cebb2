"""EVENT_LOOP: which event loop a server process runs."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from app.config import ConfigError, Settings
from app.runtime import event_loop


async def _loop_type() -> type:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_auto_and_uvloop_run_on_uvloop_and_asyncio_on_the_standard_loop() -> None:
    assert event_loop.run(_loop_type(), "auto") is uvloop.Loop
    assert event_loop.run(_loop_type(), "uvloop") is uvloop.Loop
    assert not issubclass(event_loop.run(_loop_type(), "asyncio"), uvloop.Loop)


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import fails as if not installed
    assert event_loop.loop_factory("auto") is None
    with pytest.raises(RuntimeError, match="uvloop is not installed"):
        event_loop.loop_factory("uvloop")


def test_the_setting_is_checked() -> None:
    assert Settings.from_env({}).server.event_loop == "auto"
    assert Settings.from_env({"EVENT_LOOP": "asyncio"}).server.event_loop == "asyncio"
    with pytest.raises(ConfigError, match="EVENT_LOOP"):
        Settings.from_env({"EVENT_LOOP": "trio"})
