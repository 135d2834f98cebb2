"""Process-wide state, owned by the server: settings, warm providers, live calls.

One ``AppContext`` per server process. Transports ask it to ``admit`` a call, then run a
``CallRunner`` from ``new_runner``; the registry knows every live call so that a drain can
reach them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from app.config import Settings
from app.core.providers import CallInfo, LanguageModel, SpeechToText, TextToSpeech
from app.logs import event, get_logger

if TYPE_CHECKING:
    from app.callcentre import CallCentre
    from app.campaigns.engine import CampaignSupervisor
    from app.ops.metrics import Metrics, Pricer
    from app.ops.zombies import ZombieSweeper
    from app.outbound.service import OutboundService
    from app.runtime.hooks import (
        Resumed,  # the features' types, for annotations only: runtime imports no feature
    )
    from app.store import CallRecordObserver, Store
    from app.transports.admission import Admission
    from app.transports.webrtc import WebRtcManager

log = get_logger(__name__)


@dataclass(slots=True)
class Providers:
    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech
    # Used when ``stt`` cannot open a stream for a call (a cloud recogniser that is down):
    # the embedded recogniser, so the call is still heard. None when ``stt`` is local.
    stt_fallback: SpeechToText | None = None


class CallObserver(Protocol):
    """Receives every record a call emits (see ``app.core.records``). Must not block: an
    observer that does I/O queues the work and does it elsewhere."""

    def record(self, call: CallInfo, record: Any) -> None: ...


class CallRegistry:
    """Live calls of this process, with admission control and drain."""

    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self._draining = False
        # Told of every change (a call added or removed, a drain begun); must not block.
        self.listeners: list[Callable[[], None]] = []
        self._calls: dict[str, tuple[CallInfo, Any]] = {}
        self._handovers: dict[str, Callable[[], None]] = {}
        self._changed = asyncio.Event()

    @property
    def draining(self) -> bool:
        return self._draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self._draining = value
        self._notify()

    def _notify(self) -> None:
        for listener in self.listeners:
            listener()

    def can_admit(self) -> bool:
        return not self.draining and len(self._calls) < self.max_calls

    def add(
        self, call: CallInfo, runner: Any, handover: Callable[[], None] | None = None
    ) -> None:
        """``handover``: how the call's transport hands it to another instance on a deploy
        (a Twilio stream closes at a quiet moment and is resumed elsewhere)."""
        self._calls[call.call_id] = (call, runner)
        if handover is not None:
            self._handovers[call.call_id] = handover
        self._changed.set()
        self._notify()

    def remove(self, call_id: str) -> None:
        self._calls.pop(call_id, None)
        self._handovers.pop(call_id, None)
        self._changed.set()
        self._notify()

    def get(self, call_id: str) -> Any | None:
        entry = self._calls.get(call_id)
        return entry[1] if entry else None

    def __len__(self) -> int:
        return len(self._calls)

    def count(self, transport: str | None = None) -> int:
        return sum(1 for c, _ in self._calls.values() if transport in (None, c.transport))

    def calls(self) -> list[CallInfo]:
        return [c for c, _ in self._calls.values()]

    def handovers(self) -> list[Callable[[], None]]:
        return list(self._handovers.values())

    def runners(self) -> list[Any]:
        return [r for _, r in self._calls.values()]

    async def wait_empty(self, within: float) -> bool:
        """Wait until no call is live, up to ``within`` seconds. True if empty."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._calls:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return not self._calls
        return True


class AppContext:
    """Everything a request handler needs. Built once by ``app.server.create_app``."""

    def __init__(
        self,
        settings: Settings,
        providers: Providers,
        phrases: Any,
        observers: list[CallObserver] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.phrases = phrases  # app.runtime.phrases.PhraseCache
        self.observers: list[CallObserver] = list(observers or [])
        self.calls = CallRegistry(settings.server.max_concurrent_calls)
        self.clock = clock
        # What features add as the server starts; None until then (and in tests without it).
        self.store: Store | None = None  # call records and campaigns
        self.call_records: CallRecordObserver | None = None  # writes each call's records
        self.metrics: Metrics | None = None
        self.pricer: Pricer | None = None  # prices a call's usage (default: OpsSettings rates)
        self.callcentre: CallCentre | None = None  # agent profiles, tools, post-call
        self.webrtc: WebRtcManager | None = None
        self.outbound: OutboundService | None = None
        self.campaigns: CampaignSupervisor | None = None  # dials running campaigns
        self.zombie_sweeper: ZombieSweeper | None = None
        self.admission: Admission | None = None  # slots of this machine's calls

    def new_runner(self, call: CallInfo, sink: Any, resumed: Resumed | None = None) -> Any:
        """The one factory of call runners: the call-centre layer (agent profiles), when it is
        on, plans the call; the runner is made from the plan the same way either way.
        ``resumed``: the call goes on after its stream dropped (what it had so far)."""
        from app.runtime.hooks import CallPlan
        from app.runtime.runner import CallRunner

        if self.callcentre is not None:
            plan = self.callcentre.plan(call, sink, resumed)
        else:
            script = self.settings.agent.script()
            plan = CallPlan(
                call, sink, script.resumed() if resumed else script, self.providers,
                history=resumed.history if resumed else (),
            )
        runner = CallRunner(
            call=plan.call,
            sink=plan.sink,
            providers=plan.providers,
            phrases=self.phrases,
            observers=self.observers,
            clock=self.clock,
            script=plan.script,
            hooks=plan.hooks,
            history=plan.history,
        )
        if plan.bind is not None:
            plan.bind(runner)
        return runner

    async def run_call(
        self,
        call: CallInfo,
        sink: Any,
        runner: Any | None = None,
        handover: Callable[[], None] | None = None,
    ) -> None:
        """Run a call to its end, registered for drain. The transport awaits this."""
        runner = runner or self.new_runner(call, sink)
        self.calls.add(call, runner, handover)
        try:
            await runner.run()
        finally:
            self.calls.remove(call.call_id)
            event(log, "call_unregistered", live_calls=len(self.calls))
