"""A call simulator that plays Twilio against a running server: signed webhook, TwiML,
Media Streams with real-time pacing, a playback clock for the agent's audio, and results as
data (latencies, marks, clears, protocol violations, a stereo recording)."""

from app.simulator.plan import DEFAULT_CONVERSATION, CallerLine, CallOptions
from app.simulator.results import CallResult, MarkEcho, Turn, Violation
from app.simulator.session import simulate_call

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
