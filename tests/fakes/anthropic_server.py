"""A wire-compatible fake of the Anthropic Messages API: ``POST /v1/messages`` (SSE) and models.

Checks what the real service checks on our path: an API key (``x-api-key`` or ``Authorization:
Bearer``), the ``anthropic-version`` header, and the body shape (alternating roles, tool_result
blocks answering the previous tool_use ids). Streams the real event sequence: message_start,
content_block_start/delta/stop (text_delta, input_json_delta), ping, message_delta (stop_reason,
usage), message_stop; errors as JSON bodies (``overloaded_error`` is HTTP 529) or as an SSE
``error`` event. Prompt caching is modelled: a ``cache_control`` breakpoint at or above the
model's minimum length writes the prefix on first sight and reads it afterwards.

Answers come from the offline scripted receptionist replayed over the received messages, which
may call ``end_call``; tests can pass their own ``responder``.

Faults (``faults``, consumed one per request, or ``fault_when(body)``): ``"529"``, ``"500"``,
``"429"``, ``"overloaded"`` (HTTP 200 then an SSE error event), ``"stall"`` (headers and
message_start, then nothing for ``stall_s``), ``"stall_headers"`` (no response for
``stall_s``). Latency: ``first_token_ms``, ``tokens_per_s``.

Run standalone: ``python -m tests.fakes.anthropic_server --port 8102``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.core.providers import LlmRequest, Message, ToolCall, ToolResult
from app.providers.scripted import ScriptedAgent

Block = tuple[str, Any]  # ("text", str) | ("tool_use", (name, input_dict))
Responder = Callable[[dict], list[Block]]

MODELS = ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-5")
_TOKEN = re.compile(r"\S+\s*")


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"type": "error", "error": {"type": kind, "message": message}},
        status_code=status,
        headers={"request-id": f"req_{uuid.uuid4().hex[:12]}"},
    )


def wire_to_messages(body: dict) -> tuple[Message, ...]:
    """The request's messages back in the core's terms (for the scripted responder)."""
    out: list[Message] = []
    for m in body.get("messages", []):
        content = m["content"]
        if isinstance(content, str):
            out.append(Message(m["role"], content))
            continue
        text = " ".join(b["text"] for b in content if b["type"] == "text")
        calls = tuple(
            ToolCall(b["id"], b["name"], b["input"]) for b in content if b["type"] == "tool_use"
        )
        results = tuple(
            ToolResult(b["tool_use_id"], str(b.get("content", "")))
            for b in content
            if b["type"] == "tool_result"
        )
        out.append(Message(m["role"], text, tool_calls=calls, tool_results=results))
    return tuple(out)


def scripted_responder(body: dict) -> list[Block]:
    system = body.get("system", "")
    if isinstance(system, list):
        system = " ".join(b["text"] for b in system)
    text, end_call = ScriptedAgent().respond(LlmRequest(system, wire_to_messages(body)))
    blocks: list[Block] = [("text", text)]
    if end_call:
        blocks.append(("tool_use", ("end_call", {"reason": "caller is done"})))
    return blocks


def validate(body: dict) -> str | None:
    """What the real API would reject with 400, or None."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "messages: at least one message is required"
    if msgs[0]["role"] != "user":
        return "messages: first message must use the user role"
    pending: set[str] = set()
    for i, m in enumerate(msgs):
        if i and m["role"] == msgs[i - 1]["role"]:
            return f"messages.{i}: roles must alternate between user and assistant"
        blocks = m["content"] if isinstance(m["content"], list) else []
        if m["role"] == "user":
            answered = {b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"}
            if pending - answered:
                return f"messages.{i}: tool_use ids without tool_result blocks: {sorted(pending)}"
            pending = set()
        else:
            pending = {b["id"] for b in blocks if b.get("type") == "tool_use"}
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: field required"
    return None


def min_cache_tokens(model: str) -> int:
    if model.startswith(("claude-haiku-4", "claude-opus-4-5", "claude-opus-4-6")):
        return 4096
    if model.startswith("claude-3-5-haiku") or model.startswith("claude-3-haiku"):
        return 2048
    return 1024


@dataclass
class AnthropicFake:
    api_key: str = "sk-ant-test-key"
    responder: Responder = scripted_responder
    faults: list[str] = field(default_factory=list)
    fault_when: Callable[[dict], str | None] | None = None  # a fault chosen by request body
    first_token_ms: float = 0.0
    tokens_per_s: float = 0.0  # 0: as fast as possible
    stall_s: float = 30.0
    # observations for tests
    requests: list[dict] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)  # per request: the answer ("" if none)
    _cache: set[str] = field(default_factory=set)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/models/{model_id}", self._model, methods=["GET"]),
            ]
        )

    def _auth_error(self, request: Request) -> Response | None:
        key = request.headers.get("x-api-key") or ""
        bearer = request.headers.get("authorization", "")
        if key != self.api_key and bearer != f"Bearer {self.api_key}":
            return _error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version header is required")
        return None

    async def _models(self, request: Request) -> Response:
        if (err := self._auth_error(request)) is not None:
            return err
        data = [self._model_obj(m) for m in MODELS]
        return JSONResponse(
            {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}
        )

    async def _model(self, request: Request) -> Response:
        if (err := self._auth_error(request)) is not None:
            return err
        model_id = request.path_params["model_id"]
        if model_id not in MODELS:
            return _error(404, "not_found_error", f"model: {model_id}")
        return JSONResponse(self._model_obj(model_id))

    @staticmethod
    def _model_obj(model_id: str) -> dict:
        return {
            "type": "model",
            "id": model_id,
            "display_name": model_id.replace("-", " ").title(),
            "created_at": "2025-10-01T00:00:00Z",
        }

    async def _messages(self, request: Request) -> Response:
        if (err := self._auth_error(request)) is not None:
            return err
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        self.replies.append("")
        index = len(self.replies) - 1
        fault = self.faults.pop(0) if self.faults else None
        if fault is None and self.fault_when is not None:
            fault = self.fault_when(body)
        if fault in {"529", "500", "429"}:
            kind = {
                "529": "overloaded_error",
                "500": "api_error",
                "429": "rate_limit_error",
            }[fault]
            return _error(int(fault), kind, kind.replace("_", " "))
        if fault == "stall_headers":
            await asyncio.sleep(self.stall_s)
        if (problem := validate(body)) is not None:
            return _error(400, "invalid_request_error", problem)
        if body.get("model") not in MODELS:
            return _error(404, "not_found_error", f"model: {body.get('model')}")
        if not body.get("stream"):
            return _error(400, "invalid_request_error", "this fake only streams")
        blocks = self.responder(body)
        self.replies[index] = " ".join(v for k, v in blocks if k == "text")
        return StreamingResponse(
            self._sse(body, blocks, fault),
            media_type="text/event-stream",
            headers={"request-id": f"req_{uuid.uuid4().hex[:12]}"},
        )

    def _usage(self, body: dict) -> dict[str, int]:
        """Rough token counts (4 characters a token) with the cache modelled per breakpoint."""
        tools = json.dumps(body.get("tools", []))
        system = body.get("system", "")
        sys_blocks = system if isinstance(system, list) else [{"text": system}]
        total = len(tools) + len(json.dumps(system)) + len(json.dumps(body["messages"]))
        prefix, cached_upto = tools, 0
        for b in sys_blocks:
            prefix += b["text"]
            if "cache_control" in b:
                cached_upto = len(prefix)
        created = read = 0
        tokens = cached_upto // 4
        if cached_upto and tokens >= min_cache_tokens(body["model"]):
            key = hashlib.sha256(prefix[:cached_upto].encode()).hexdigest()
            if key in self._cache:
                read = tokens
            else:
                self._cache.add(key)
                created = tokens
        return {
            "input_tokens": max(1, total // 4 - created - read),
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read,
            "output_tokens": 1,
        }

    async def _sse(self, body: dict, blocks: list[Block], fault: str | None) -> AsyncIterator[str]:
        def ev(kind: str, data: dict) -> str:
            return f"event: {kind}\ndata: {json.dumps(data)}\n\n"

        usage = self._usage(body)
        msg_id = f"msg_{uuid.uuid4().hex[:20]}"
        yield ev(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": usage,
                },
            },
        )
        if fault == "overloaded":
            yield ev(
                "error",
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            )
            return
        if fault == "stall":
            await asyncio.sleep(self.stall_s)
        yield ev("ping", {"type": "ping"})
        if self.first_token_ms:
            await asyncio.sleep(self.first_token_ms / 1000)
        out_tokens = 0
        stop_reason = "end_turn"
        for index, (kind, value) in enumerate(blocks):
            if kind == "text":
                start = {"type": "text", "text": ""}
                pieces = [{"type": "text_delta", "text": t} for t in _TOKEN.findall(value)]
            else:
                name, args = value
                start = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": name}
                start["input"] = {}
                raw = json.dumps(args)
                pieces = [
                    {"type": "input_json_delta", "partial_json": raw[i : i + 8]}
                    for i in range(0, len(raw), 8)
                ]
                stop_reason = "tool_use"
            yield ev(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
            for delta in pieces:
                out_tokens += 1
                if self.tokens_per_s:
                    await asyncio.sleep(1 / self.tokens_per_s)
                yield ev(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            yield ev("content_block_stop", {"type": "content_block_stop", "index": index})
        yield ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": max(1, out_tokens)},
            },
        )
        yield ev("message_stop", {"type": "message_stop"})


async def _main() -> None:
    from tests.fakes.asgi import serve_forever

    parser = argparse.ArgumentParser(description="Fake Anthropic Messages API on loopback")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="sk-ant-test-key")
    parser.add_argument("--first-token-ms", type=float, default=0.0)
    parser.add_argument("--tokens-per-s", type=float, default=0.0)
    args = parser.parse_args()
    fake = AnthropicFake(
        api_key=args.api_key, first_token_ms=args.first_token_ms, tokens_per_s=args.tokens_per_s
    )
    await serve_forever(fake.app(), args.port, "anthropic")


if __name__ == "__main__":
    import contextlib

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
