"""A call simulator that plays Twilio against a running server: signed webhook, TwiML,
Media Streams with real-time pacing, a playback clock for the agent's audio, and results as
data (latencies, marks, clears, protocol violations, a stereo recording).

    result = await simulate_call(
        "http://127.0.0.1:8080",
        ["I'd like to book an appointment", CallerLine(text="Stop, wait", barge_in_ms=600)],
        CallOptions(reply_timeout=10, wav_out=Path("call.wav")),
    )
    assert result.ok, (result.error, result.violations)
    result.greeting_latency_ms, [t.latency_ms for t in result.turns], result.turns[2].barge_in_ms
"""

from app.simulator.call import simulate_call
from app.simulator.plan import DEFAULT_CONVERSATION, CallerLine, CallOptions
from app.simulator.results import CallResult, MarkEcho, Turn, Violation

__all__ = [
    "DEFAULT_CONVERSATION",
    "CallOptions",
    "CallResult",
    "CallerLine",
    "MarkEcho",
    "Turn",
    "Violation",
    "simulate_call",
]
