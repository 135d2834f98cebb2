"""Claude as the agent's language model: streamed, with tools, bounded context and budgeted retries.

Text deltas go out as they arrive (the session turns them into sentences for TTS while the
model is still writing). Tool calls (``end_call``, ``transfer_call``) come back as ``ToolCall``
once their input is complete. Usage, including cache reads, ends the stream.

Why our own retries: the SDK retries 429/529/5xx itself, but sleeps 0.5–8 s with jitter (or
whatever ``retry-after`` says), which on a phone line is dead air. So the SDK's ``max_retries``
is 0 and we retry here, fast, only before the first text has gone out (afterwards a retry would
repeat words the caller already heard), and only within ``retry_budget_s``. A stream that sends
nothing for ``first_event_timeout_s`` (or stalls mid-way) counts as failed. Past the budget we
raise, and the session speaks its cached fallback phrase.

Prompt caching: the system prompt (with the tools before it) gets a ``cache_control`` breakpoint
once it is long enough to be cacheable for the model (shorter prefixes are silently not cached,
so marking them only adds noise); a second breakpoint on the latest message caches the growing
conversation within a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2

from app.core.providers import (
    LlmEvent,
    LlmRequest,
    LlmUsage,
    Message,
    TextDelta,
    ToolCall,
    ToolSpec,
)
from app.logs import event, get_logger, register_secret
from app.providers.budget import Failure, may_retry

log = get_logger(__name__)
# At DEBUG the SDK and its HTTP stack log request bodies, i.e. the conversation: keep them quiet.
for _name in ("anthropic", "httpx2", "httpcore2"):
    logging.getLogger(_name).setLevel(logging.WARNING)

_RETRYABLE = {408, 409, 429, 500, 502, 503, 504, 529}
_CHARS_PER_TOKEN = 4  # a conservative estimate for English: under-marks rather than over-marks


class LlmError(RuntimeError):
    """Claude did not answer within the latency budget (after retries) or refused the request."""


@dataclass(frozen=True, slots=True)
class ClaudeOptions:
    max_tokens: int = 300  # a spoken reply is a sentence or two
    context_chars: int = 24_000  # history budget (~6k tokens); oldest turns go first
    # Typical first token is 150-250 ms; no text (or tool) by this time means a stuck request.
    first_event_timeout_s: float = 1.5
    stall_timeout_s: float = 3.0  # silence between events once streaming
    # All attempts together. The session covers 1.2 s with a filler phrase, so raising at 3 s
    # lets the fallback phrase follow the filler with under a second of silence.
    # A service answering errors fast will not get better by the 4th try within a second.
    max_attempts: int = 3
    retry_budget_s: float = 3.0
    connect_timeout_s: float = 2.0


def min_cacheable_tokens(model: str) -> int:
    """The shortest prefix the model caches (documented per model; below it nothing is cached)."""
    if model.startswith(("claude-haiku-4", "claude-opus-4-5", "claude-opus-4-6")):
        return 4096
    if model.startswith(("claude-3-5-haiku", "claude-3-haiku", "claude-sonnet-4-6")):
        return 2048
    return 1024


# --------------------------------------------------------------------------- request (pure)


def tools_param(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools
    ]


def wire_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Core messages -> Messages API shape: alternating roles, tool_use answered by tool_result."""
    out: list[dict[str, Any]] = []
    pending: list[str] = []  # tool_use ids the next user message must answer
    for m in messages:
        blocks: list[dict[str, Any]] = []
        if m.role == "user":
            answered = {r.call_id for r in m.tool_results}
            blocks += [
                {"type": "tool_result", "tool_use_id": r.call_id, "content": r.content}
                for r in m.tool_results
            ]
            # The API rejects a tool_use left unanswered; the call has moved on, so say so.
            blocks += [
                {"type": "tool_result", "tool_use_id": i, "content": "done"}
                for i in pending
                if i not in answered
            ]
            pending = []
            if m.content.strip():
                blocks.append({"type": "text", "text": m.content})
        else:
            if m.content.strip():
                blocks.append({"type": "text", "text": m.content})
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.arguments)}
                for c in m.tool_calls
            ]
            pending = [c.id for c in m.tool_calls]
        if not blocks:
            continue
        if out and out[-1]["role"] == m.role:
            out[-1]["content"] += blocks
        else:
            out.append({"role": m.role, "content": blocks})
    return out


def _size(message: dict[str, Any]) -> int:
    return sum(
        len(str(b.get("text") or b.get("content") or b.get("input") or ""))
        for b in message["content"]
    )


def trim_history(messages: list[dict[str, Any]], budget_chars: int) -> list[dict[str, Any]]:
    """Drop the oldest turns until the history fits, keeping it a valid conversation."""
    msgs = list(messages)
    total = sum(_size(m) for m in msgs)
    while len(msgs) > 1 and total > budget_chars:
        total -= _size(msgs.pop(0))
    # It must start with a user message, with no answer to a tool call that is gone.
    while msgs and msgs[0]["role"] != "user":
        msgs.pop(0)
    if msgs:
        head = [b for b in msgs[0]["content"] if b["type"] != "tool_result"]
        if not head:
            msgs.pop(0)
            return trim_history(msgs, budget_chars)
        msgs[0] = {"role": "user", "content": head}
    return msgs


def build_params(request: LlmRequest, model: str, opts: ClaudeOptions) -> dict[str, Any]:
    tools = tools_param(request.tools)
    messages = trim_history(wire_messages(request.messages), opts.context_chars)
    if not messages:
        messages = [
            {"role": "user", "content": [{"type": "text", "text": "(the caller is silent)"}]}
        ]
    system: list[dict[str, Any]] = [{"type": "text", "text": request.system}]
    prefix_chars = len(request.system) + sum(len(str(t)) for t in tools)
    min_tokens = min_cacheable_tokens(model)
    if prefix_chars // _CHARS_PER_TOKEN >= min_tokens:
        system[0]["cache_control"] = {"type": "ephemeral"}
    history_chars = sum(_size(m) for m in messages)
    if (prefix_chars + history_chars) // _CHARS_PER_TOKEN >= min_tokens:
        last = messages[-1]["content"][-1]
        messages[-1]["content"][-1] = {**last, "cache_control": {"type": "ephemeral"}}
    params: dict[str, Any] = {
        "model": model,
        "max_tokens": opts.max_tokens,
        "system": system,
        "messages": messages,
    }
    if tools:
        params["tools"] = tools
    return params


# --------------------------------------------------------------------------- provider


class ClaudeLlm:
    name = "anthropic"

    def __init__(
        self,
        api_key: str,
        model: str = "claude-haiku-4-5",
        base_url: str | None = None,
        options: ClaudeOptions | None = None,
    ) -> None:
        register_secret(api_key)
        self.model = model
        self.options = opts = options or ClaudeOptions()
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,  # we retry within a latency budget ourselves (see module doc)
            timeout=httpx2.Timeout(opts.stall_timeout_s, connect=opts.connect_timeout_s),
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmEvent]:
        params = build_params(request, self.model, self.options)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.retry_budget_s
        attempt = 0
        while True:
            attempt += 1
            spoke = False
            started = time.perf_counter()
            try:
                async for item in self._attempt(params, deadline):
                    if isinstance(item, TextDelta | ToolCall) and not spoke:
                        spoke = True
                        event(
                            log,
                            "llm_first_event",
                            provider="anthropic",
                            attempt=attempt,
                            ms=round((time.perf_counter() - started) * 1000),
                        )
                    yield item
                return
            except Failure as failure:
                remaining = deadline - loop.time()
                retry = may_retry(failure, spoke, attempt, self.options.max_attempts, remaining)
                event(
                    log,
                    "llm_error",
                    provider="anthropic",
                    attempt=attempt,
                    reason=failure.reason,
                    retrying=retry,
                )
                if not retry:
                    raise LlmError(f"anthropic: {failure.reason}") from failure.__cause__
                await asyncio.sleep(failure.wait)

    async def _attempt(self, params: dict[str, Any], deadline: float) -> AsyncIterator[LlmEvent]:
        """One request. Raises ``Failure`` describing what went wrong."""
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
        pump = asyncio.create_task(self._pump(params, queue))
        loop = asyncio.get_running_loop()
        usage = LlmUsage()
        first = True
        try:
            while True:
                limit = (
                    self.options.first_event_timeout_s if first else self.options.stall_timeout_s
                )
                limit = min(limit, max(0.05, deadline - loop.time())) if first else limit
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                    # cancellation that races with a ready item, leaving a zombie stream.
                    async with asyncio.timeout(limit):
                        item = await queue.get()
                except TimeoutError:
                    raise Failure(f"no answer within {limit:.1f}s", True, 0.0) from None
                if item is None:
                    break
                if isinstance(item, Failure):
                    raise item
                if isinstance(item, LlmUsage):
                    usage = item
                    continue
                first = False
                yield item
            yield usage
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump

    async def _pump(self, params: dict[str, Any], queue: asyncio.Queue[Any]) -> None:
        input_tokens = cache_write = cache_read = output_tokens = 0
        try:
            # The raw event stream (``create(stream=True)``), not ``messages.stream()``: that
            # helper rebuilds a snapshot of the whole message on every delta, which made a
            # streamed reply cost ~9.6 ms of CPU (BENCHMARKS.md). Tool input is the only thing
            # to accumulate here: its JSON arrives in pieces, parsed at the block's end.
            tools: dict[int, tuple[str, str, list[str]]] = {}
            stream = await self._client.messages.create(**params, stream=True)
            async with stream:
                async for ev in stream:
                    kind = ev.type
                    if kind == "content_block_delta":
                        delta = ev.delta
                        if delta.type == "text_delta":
                            if delta.text:
                                await queue.put(TextDelta(delta.text))
                        elif delta.type == "input_json_delta" and ev.index in tools:
                            tools[ev.index][2].append(delta.partial_json)
                    elif kind == "message_start":
                        u = ev.message.usage
                        input_tokens = u.input_tokens
                        cache_write = u.cache_creation_input_tokens or 0
                        cache_read = u.cache_read_input_tokens or 0
                    elif kind == "content_block_start" and ev.content_block.type == "tool_use":
                        block = ev.content_block
                        tools[ev.index] = (block.id, block.name, [])
                    elif kind == "content_block_stop" and ev.index in tools:
                        tool_id, name, parts = tools.pop(ev.index)
                        await queue.put(ToolCall(tool_id, name, _tool_input(parts)))
                    elif kind == "message_delta":
                        output_tokens = ev.usage.output_tokens
            # Cache writes bill at (above) the input rate: count them as input.
            await queue.put(LlmUsage(input_tokens + cache_write, output_tokens, cache_read))
            await queue.put(None)
        except anthropic.APIStatusError as exc:
            await queue.put(_status_failure(exc))
        except anthropic.APITimeoutError as exc:
            await queue.put(Failure("timeout", True, 0.05, exc))
        except anthropic.APIConnectionError as exc:
            await queue.put(Failure(f"connection: {type(exc.__cause__).__name__}", True, 0.1, exc))
        except Exception as exc:  # a malformed stream: not worth a retry
            await queue.put(Failure(f"bad stream: {type(exc).__name__}", False, 0.0, exc))


def _tool_input(parts: list[str]) -> dict[str, Any]:
    """A tool call's arguments from its streamed JSON pieces ({} when none or not an object;
    a malformed stream is the tool's problem to reject, not a reason to drop the reply)."""
    text = "".join(parts).strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _status_failure(exc: anthropic.APIStatusError) -> Failure:
    status = exc.status_code
    kind = ""
    if isinstance(exc.body, dict):
        kind = str((exc.body.get("error") or {}).get("type", ""))
    overloaded = kind == "overloaded_error"
    retryable = status in _RETRYABLE or overloaded
    wait = 0.05
    retry_after = exc.response.headers.get("retry-after") if exc.response is not None else None
    if retry_after:
        with contextlib.suppress(ValueError):
            wait = max(wait, float(retry_after))
    return Failure(f"HTTP {status} {kind}".strip(), retryable, wait, exc)


def create(settings: Any) -> ClaudeLlm:
    """The registry's factory: ``ClaudeLlm`` from ``app.config.Settings``."""
    cloud = settings.providers.cloud
    if not cloud.anthropic_api_key:
        raise ValueError("ANTHROPIC_API_KEY is not set")
    return ClaudeLlm(cloud.anthropic_api_key, cloud.anthropic_model, cloud.anthropic_base_url)
