"""The metrics observer and ``/metrics``: records in, Prometheus text out."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from app.config import OpsSettings, Settings
from app.core.providers import CallInfo
from app.core.records import CallEnded, CallEvent, TranscriptLine, TurnMetrics, Usage
from app.ops import metrics as ops_metrics
from app.ops.metrics import Metrics
from app.runtime.context import CallRegistry


def samples(text: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: Metrics, name: str, **labels: str) -> float:
    return samples(m.render()).get((name, tuple(sorted(labels.items()))), 0.0)


CALL = CallInfo(call_id="CA" + "a" * 32, transport="twilio", from_number="+14155550123")


def test_a_call_moves_every_series() -> None:
    calls = CallRegistry(max_calls=3)
    m = Metrics(calls, pricer=lambda usage, seconds, call: 0.01 * seconds)
    calls.add(CALL, runner=object())
    assert value(m, "voice_agent_active_calls", transport="twilio") == 1
    assert value(m, "voice_agent_active_calls", transport="webrtc") == 0
    assert value(m, "voice_agent_call_capacity") == 3

    m.record(CALL, CallEvent("call_started", 100.0, {"transport": "twilio"}))
    m.record(CALL, CallEvent("greeting_first_audio", 100.2, {"ms": 240}))
    m.record(CALL, TranscriptLine("caller", "my number is 415 555 0123", 101.0))
    m.record(CALL, TurnMetrics(turn=1, speech_end=101.0, stt_final=101.3, turn_committed=101.3,
                               llm_first_token=101.7, tts_first_audio=101.8,
                               first_audio_sent=101.85))
    m.record(CALL, TurnMetrics(turn=2, stt_final=105.0, turn_committed=105.0, filler=True))
    m.record(CALL, CallEvent("barge_in", 103.0, {"turn": 1}))
    m.record(CALL, CallEvent("provider_error", 104.0, {"provider": "llm",
                                                      "type": "APIConnectionError: refused"}))
    m.record(CALL, CallEvent("provider_reconnect", 104.5, {"provider": "stt", "type": "closed"}))
    m.record(CALL, Usage(llm_input_tokens=100, stt_seconds=12.0))
    m.record(CALL, CallEnded("caller hung up", 130.0))
    calls.remove(CALL.call_id)

    s = samples(m.render())
    h = "voice_agent_turn_latency_seconds"
    assert s[(f"{h}_count", (("stage", "total"),))] == 1
    assert abs(s[(f"{h}_sum", (("stage", "total"),))] - 0.85) < 1e-6
    assert abs(s[(f"{h}_sum", (("stage", "llm_first_token"),))] - 0.4) < 1e-6
    assert abs(s[(f"{h}_sum", (("stage", "endpoint_to_stt_final"),))] - 0.3) < 1e-6
    assert s[(f"{h}_bucket", (("le", "0.3"), ("stage", "endpoint_to_stt_final")))] == 1
    assert s[(f"{h}_bucket", (("le", "0.2"), ("stage", "endpoint_to_stt_final")))] == 0
    assert s[("voice_agent_turns_total", (("kind", "direct"),))] == 1
    assert s[("voice_agent_turns_total", (("kind", "filler"),))] == 1
    assert s[("voice_agent_greeting_first_audio_seconds_sum", ())] == 0.24
    assert s[("voice_agent_barge_ins_total", (("transport", "twilio"),))] == 1
    assert s[("voice_agent_provider_errors_total",
              (("provider", "llm"), ("type", "apiconnectionerror")))] == 1
    assert s[("voice_agent_provider_reconnects_total",
              (("provider", "stt"), ("type", "closed")))] == 1
    assert s[("voice_agent_calls_ended_total",
              (("reason", "caller_hung_up"), ("transport", "twilio")))] == 1
    assert s[("voice_agent_call_duration_seconds_sum", (("transport", "twilio"),))] == 30.0
    assert abs(s[("voice_agent_call_cost_dollars_total", (("transport", "twilio"),))] - 0.3) < 1e-9
    assert s[("voice_agent_active_calls", (("transport", "twilio"),))] == 0
    text = m.render().decode()
    # no personal data in metrics (whole numbers: a float sample may hold any digits)
    assert "4155550123" not in text and "415 555" not in text and "number is" not in text


def test_unpriced_calls_are_counted_not_guessed() -> None:
    m = Metrics(None)
    m.record(CALL, CallEvent("call_started", 0.0))
    m.record(CALL, CallEnded("agent ended", 5.0))
    assert value(m, "voice_agent_calls_unpriced_total", transport="twilio") == 1
    assert value(m, "voice_agent_call_cost_dollars_total", transport="twilio") == 0


def test_end_reasons_are_bounded() -> None:
    m = Metrics(None)
    for i in range(ops_metrics.MAX_REASONS + 5):
        call = CallInfo(call_id=f"c{i}", transport="webrtc")
        m.record(call, CallEnded(f"reason {i}", 1.0))
    s = samples(m.render())
    reasons = {dict(k[1])["reason"] for k in s if k[0] == "voice_agent_calls_ended_total"}
    assert len(reasons) == ops_metrics.MAX_REASONS + 1
    assert s[("voice_agent_calls_ended_total", (("reason", "other"), ("transport", "webrtc")))] == 5


class _Ctx:
    def __init__(self, token: str | None) -> None:
        self.settings = Settings(ops=OpsSettings(metrics_token=token))
        self.calls = CallRegistry(max_calls=5)
        self.observers: list = []
        self.metrics = None
        self.pricer = None


async def test_endpoint_requires_the_bearer_token_when_set() -> None:
    ctx = _Ctx("metrics-secret-123")
    app = Starlette(routes=ops_metrics.routes(ctx))
    assert ctx.observers == [ctx.metrics]  # installed as a call observer
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await client.get("/metrics", headers={"Authorization": "Bearer metrics-secret-123"})
        assert ok.status_code == 200
        assert ok.headers["content-type"].startswith("text/plain")
        assert ("voice_agent_call_capacity", ()) in samples(ok.text)


def _client(app, peer: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(peer, 40000)),
                             base_url="http://test")


async def test_without_a_token_the_public_port_serves_loopback_only() -> None:
    ctx = _Ctx(None)
    app = Starlette(routes=ops_metrics.routes(ctx))
    async with _client(app, "127.0.0.1") as client:
        assert (await client.get("/metrics")).status_code == 200
        relayed = await client.get("/metrics", headers={"X-Forwarded-For": "93.184.216.34"})
        assert relayed.status_code == 401  # a local proxy relaying the internet
    async with _client(app, "93.184.216.34") as client:
        assert (await client.get("/metrics")).status_code == 401


async def test_the_metrics_port_serves_the_private_network_only() -> None:
    ctx = _Ctx("metrics-secret-123")
    app = ops_metrics.internal_app(ctx)
    for peer in ("fdaa:0:3b99:a7b:1::2", "172.19.2.10", "127.0.0.1"):  # fly 6PN, private
        async with _client(app, peer) as client:
            ok = await client.get("/metrics")
            assert ok.status_code == 200 and ("voice_agent_call_capacity", ()) in samples(ok.text)
    async with _client(app, "93.184.216.34") as client:
        assert (await client.get("/metrics")).status_code == 403
        assert (await client.get("/health")).status_code == 404  # nothing else is there
