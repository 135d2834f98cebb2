"""Claude adapter: the real anthropic SDK against the wire-compatible fake on 127.0.0.1."""

from __future__ import annotations

import logging
import time

import pytest

from app.core.providers import (
    LlmRequest,
    LlmUsage,
    Message,
    TextDelta,
    ToolCall,
    ToolResult,
    ToolSpec,
)
from app.logs import JsonFormatter
from app.providers.anthropic import (
    ClaudeLlm,
    ClaudeOptions,
    LlmError,
    build_params,
    trim_history,
    wire_messages,
)
from tests.fakes.anthropic_server import AnthropicFake, validate
from tests.fakes.asgi import LoopbackServer

KEY = "sk-ant-secret-key-5678"
END_CALL = ToolSpec("end_call", "End the call.", {"type": "object", "properties": {}})
TRANSFER = ToolSpec("transfer_call", "Transfer.", {"type": "object", "properties": {}})
SYSTEM = "You are Ava, the receptionist of Sunrise Dental."


def req(*messages: Message, system: str = SYSTEM) -> LlmRequest:
    return LlmRequest(system=system, messages=messages, tools=(END_CALL, TRANSFER))


@pytest.fixture
async def fake():
    fake = AnthropicFake(api_key=KEY)
    async with LoopbackServer(fake.app()) as srv:
        fake.url = srv.url  # type: ignore[attr-defined]
        yield fake


def llm(fake, **opts) -> ClaudeLlm:
    return ClaudeLlm(KEY, base_url=fake.url, options=ClaudeOptions(**opts))


async def run(model: ClaudeLlm, request: LlmRequest) -> list:
    try:
        return [e async for e in model.stream(request)]
    finally:
        await model.aclose()


def text_of(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# --------------------------------------------------------------------------- pure parts


def test_wire_messages_pair_tool_calls_with_results():
    msgs = wire_messages(
        [
            Message("user", "I want to book"),
            Message("assistant", "Sure.", tool_calls=(ToolCall("t1", "transfer_call", {}),)),
            Message("user", "thanks"),  # the result was never recorded: answered for the API
            Message("assistant", "One sec.", tool_calls=(ToolCall("t2", "transfer_call", {}),)),
            Message("user", "", tool_results=(ToolResult("t2", "transferred"),)),
        ]
    )
    assert validate({"messages": msgs, "max_tokens": 5}) is None
    assert msgs[2]["content"][0] == {"type": "tool_result", "tool_use_id": "t1", "content": "done"}
    assert msgs[4]["content"] == [
        {"type": "tool_result", "tool_use_id": "t2", "content": "transferred"}
    ]


def test_trim_history_keeps_a_valid_conversation_within_budget():
    turns = []
    for i in range(40):
        turns += [Message("user", f"question {i} " * 20), Message("assistant", f"answer {i} " * 20)]
    turns.append(Message("user", "last question"))
    msgs = trim_history(wire_messages(turns), budget_chars=2000)
    assert msgs[0]["role"] == "user" and msgs[-1]["content"][-1]["text"] == "last question"
    assert sum(len(b["text"]) for m in msgs for b in m["content"]) <= 2000
    assert validate({"messages": msgs, "max_tokens": 5}) is None


def test_cache_breakpoint_only_when_the_prefix_is_cacheable():
    short = build_params(req(Message("user", "hi")), "claude-haiku-4-5", ClaudeOptions())
    assert "cache_control" not in short["system"][0]
    long_system = "Our clinic policies: " + "be kind and precise. " * 900  # ~4.7k tokens
    long = build_params(
        req(Message("user", "hi"), system=long_system), "claude-haiku-4-5", ClaudeOptions()
    )
    assert long["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert long["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    # the same prompt is long enough for a model with a lower minimum, not for Haiku 4.5
    mid = "policy. " * 700  # ~1.4k tokens
    assert (
        "cache_control"
        in build_params(
            req(Message("user", "hi"), system=mid), "claude-sonnet-4-5", ClaudeOptions()
        )["system"][0]
    )
    assert (
        "cache_control"
        not in build_params(
            req(Message("user", "hi"), system=mid), "claude-haiku-4-5", ClaudeOptions()
        )["system"][0]
    )


# --------------------------------------------------------------------------- real SDK, fake wire


async def test_streams_text_then_end_call_with_usage(fake):
    events = await run(llm(fake), req(Message("user", "No, that's all, thank you. Goodbye.")))
    text = text_of(events)
    assert text and sum(isinstance(e, TextDelta) for e in events) > 1  # streamed, not one lump
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [c.name for c in calls] == ["end_call"] and calls[0].arguments == {
        "reason": "caller is done"
    }
    assert isinstance(events[-1], LlmUsage) and events[-1].output_tokens > 0
    sent, headers = fake.requests[0], fake.headers[0]
    assert headers["authorization"] == f"Bearer {KEY}" and headers["anthropic-version"]
    assert sent["stream"] is True and sent["model"] == "claude-haiku-4-5"
    assert [t["name"] for t in sent["tools"]] == ["end_call", "transfer_call"]
    assert sent["tools"][0]["input_schema"] == {"type": "object", "properties": {}}


async def test_529_then_success(fake):
    fake.faults = ["529"]
    started = time.monotonic()
    events = await run(llm(fake), req(Message("user", "What are your opening hours?")))
    assert "Monday" in text_of(events) and len(fake.requests) == 2
    assert time.monotonic() - started < 0.5  # no SDK back-off of 0.5-8 s


async def test_overloaded_error_event_inside_the_stream_is_retried(fake):
    fake.faults = ["overloaded", "500"]
    events = await run(llm(fake), req(Message("user", "What are your opening hours?")))
    assert "Monday" in text_of(events) and len(fake.requests) == 3


async def test_stall_past_budget_raises_within_budget(fake):
    fake.faults = ["stall"] * 5
    fake.stall_s = 10
    started = time.monotonic()
    with pytest.raises(LlmError, match="no answer"):
        await run(
            llm(fake, first_event_timeout_s=0.4, retry_budget_s=1.0), req(Message("user", "hello"))
        )
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 1.3 and len(fake.requests) == 3


async def test_default_budget_gives_up_before_the_session_would(fake):
    fake.faults = ["stall_headers"] * 5
    fake.stall_s = 10
    started = time.monotonic()
    with pytest.raises(LlmError):
        await run(llm(fake), req(Message("user", "hello")))
    assert time.monotonic() - started < ClaudeOptions().retry_budget_s + 0.3


async def test_client_errors_are_not_retried(fake):
    model = ClaudeLlm(KEY, model="claude-unknown", base_url=fake.url)
    with pytest.raises(LlmError, match="404"):
        await run(model, req(Message("user", "hello")))
    assert len(fake.requests) == 1
    with pytest.raises(LlmError, match="401"):
        await run(ClaudeLlm("wrong-key-000", base_url=fake.url), req(Message("user", "hello")))


async def test_prompt_cache_reads_on_the_second_turn(fake):
    system = "Clinic handbook. " + "Always confirm the day and time. " * 700
    model = llm(fake)
    try:
        first = [e async for e in model.stream(req(Message("user", "Hi"), system=system))]
        second = [
            e
            async for e in model.stream(
                req(
                    Message("user", "Hi"),
                    Message("assistant", "Hello!"),
                    Message("user", "Hours?"),
                    system=system,
                )
            )
        ]
    finally:
        await model.aclose()
    assert first[-1].cached_tokens == 0 and first[-1].input_tokens > 4096
    assert second[-1].cached_tokens > 4096


async def test_interrupted_reply_is_sent_as_heard(fake):
    history = (
        Message("user", "Can I book a cleaning?"),
        Message("assistant", "Of course, which day", interrupted=True),
        Message("user", "Tuesday at ten"),
    )
    await run(llm(fake), req(*history))
    sent = fake.requests[0]["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Of course, which day"}],
    }


async def test_no_key_or_conversation_in_logs(fake, caplog):
    caplog.set_level(logging.DEBUG)
    fake.faults = ["529"]
    await run(llm(fake), req(Message("user", "My name is Zebulon Quartermaine")))
    lines = [JsonFormatter().format(r) for r in caplog.records]
    assert any("llm_error" in line for line in lines)
    for line in lines:
        assert KEY not in line and "Zebulon" not in line and "Monday" not in line
