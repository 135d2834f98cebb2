"""An outbound call the server placed: the answered stream gets that call's prompt and
variables, the model is offered set_outcome, and the outcome lands on the call record."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from app.core.providers import LlmEvent, LlmRequest, TextDelta, ToolCall
from app.providers.scripted import ScriptedAgent
from app.simulator import CallOptions, simulate_call
from app.store.calls import record_outbound

pytestmark = pytest.mark.slow


class Listening:
    """The scripted agent, keeping each request it was sent, and recording an outcome once the
    caller has said something (as a cloud model would call the tool)."""

    name = "scripted"

    def __init__(self) -> None:
        self.inner = ScriptedAgent()
        self.requests: list[LlmRequest] = []

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmEvent]:
        self.requests.append(request)
        if any(t.name == "set_outcome" for t in request.tools):
            yield ToolCall("t1", "set_outcome", {"outcome": "callback_requested", "summary": "x"})
        async for item in self.inner.stream(request):
            if isinstance(item, TextDelta) or not isinstance(item, ToolCall):
                yield item


async def test_outbound_call_carries_its_prompt_variables_and_outcome(local_server, tmp_path):  # type: ignore[no-untyped-def]
    sid = "CA" + "7" * 32
    async with local_server(DATABASE_URL=f"sqlite:///{tmp_path}/calls.db") as srv:
        llm = Listening()
        srv.ctx.providers.llm = llm
        store = srv.ctx.store
        async with store.db.tx() as conn:
            await record_outbound(
                conn,
                store.db,
                call_sid=sid,
                now=time.time(),
                to_number="+15005550006",
                from_number="+15005550001",
                variables={"first_name": "Dana"},
                prompt="Remind the caller of their cleaning on Friday.",
            )
        result = await simulate_call(
            srv.url,
            ("What are your opening hours?",),
            CallOptions(
                call_sid=sid,
                direction="outbound-api",
                from_number="+15005550001",
                to_number="+15005550006",
                call_timeout=90,
            ),
        )
        assert result.connected and not result.violations
        await srv.ctx.call_records.flush(wait_s=5.0)
        row = await store.calls.get_call(sid)
    request = llm.requests[0]
    assert request.call is not None and request.call.direction == "outbound"
    assert request.call.variables["first_name"] == "Dana"
    assert "Remind the caller of their cleaning on Friday." in request.system
    assert "set_outcome" in {t.name for t in request.tools}
    assert row is not None and row["outcome"] == "callback_requested"
