"""Which event loop runs a server process.

uvloop (libuv underneath) does the same work as the standard library's loop with about half
the CPU per socket event, and a call is 50 socket events a second in, as many out, plus its
provider sockets (BENCHMARKS.md, "The event loop"). ``EVENT_LOOP=asyncio`` keeps the standard
loop; ``auto`` takes uvloop where it is installed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for ``choice`` ("auto", "uvloop" or "asyncio"); None: the standard loop."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError("EVENT_LOOP=uvloop but uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
