"""From raw call timings to the benchmark's figures (pure: no I/O, no clock).

Overhead per turn is what our side adds: caller speech end -> first agent audio received, minus
the time the providers are known to take (their injected latency, the tokens the model writes
before the first sentence can be spoken) and the configured endpointing wait. Everything left
is framework: reading and forwarding frames, deciding, queueing, re-framing, and the sockets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from app.bench.caller import BenchCall

STARVED_GAP_MS = 20.0  # a playout gap of a whole frame or more: the caller heard a hole


@dataclass(frozen=True, slots=True)
class Dist:
    n: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Dist:
        if not values:
            return cls(0, None, None, None, None)
        a = np.asarray(values, dtype=np.float64)
        p50, p95, p99 = (float(v) for v in np.percentile(a, [50, 95, 99]))
        return cls(len(a), p50, p95, p99, float(a.max()))

    def as_dict(self) -> dict[str, float | int | None]:
        r = lambda v: None if v is None else round(v, 2)  # noqa: E731
        return {"n": self.n, "p50": r(self.p50), "p95": r(self.p95), "p99": r(self.p99),
                "max": r(self.max)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TurnBudget:
    """The known, non-framework part of one caller line's reply time, in ms (from the end of the
    caller's clip)."""

    endpoint_ms: float  # the recogniser's endpointing wait, as the fake applies it to this clip
    app_endpointing_ms: float  # the session's own extra wait (ENDPOINTING_MS)
    stt_ms: float  # the recogniser's final, after its endpoint
    model_ms: float  # LLM first token + tokens to the first piece + TTS first audio
    confirm_ms: float  # the silence the server waits out itself after the recogniser's early end
    barge_in_wait_ms: float  # speech the server must hear before it pauses the agent
    speculative: bool = False  # the model starts on the final, before the turn is confirmed

    @property
    def providers_ms(self) -> float:
        return self.stt_ms + self.model_ms

    @property
    def reply_ms(self) -> float:
        final = self.endpoint_ms + self.stt_ms
        confirmed = final + self.confirm_ms + self.app_endpointing_ms
        if self.speculative:  # the model's wait overlaps the confirmation
            return max(final + self.model_ms, confirmed)
        return confirmed + self.model_ms


@dataclass(slots=True)
class StepStats:
    calls: int
    overhead_ms: Dist
    latency_ms: Dist
    greeting_ms: Dist
    barge_in_ms: Dist
    barge_in_overhead_ms: Dist
    lateness_ms: Dist
    starved: int  # playout gaps of a frame or more
    failures: list[str] = field(default_factory=list)  # errors, violations, missing replies
    tick_lag_ms: Dist = field(default_factory=lambda: Dist.of([]))
    call_minutes: float = 0.0


def summarise(
    calls: Sequence[BenchCall], budgets: Sequence[TurnBudget], tick_lag_ms: Sequence[float]
) -> StepStats:
    """``budgets[i]`` is caller line ``i``'s (turn ``i + 1``)."""
    overhead: list[float] = []
    latency: list[float] = []
    greeting: list[float] = []
    barge: list[float] = []
    barge_over: list[float] = []
    lateness: list[float] = []
    failures: list[str] = []
    minutes = 0.0
    for call in calls:
        r = call.result
        if r.error or not r.connected:
            failures.append(f"{r.call_sid[:10]}: {r.error or 'never connected'}")
            continue
        failures.extend(f"{r.call_sid[:10]}: {v.kind}: {v.detail}" for v in r.violations)
        if r.hangup != "caller":
            failures.append(f"{r.call_sid[:10]}: hung up by {r.hangup} before the script ended")
        minutes += r.duration_s / 60
        lateness.extend(call.lateness_ms)
        if (g := r.greeting_latency_ms) is not None:
            greeting.append(g)
        for turn in r.turns:
            if turn.timed_out:
                failures.append(f"{r.call_sid[:10]}: no reply to turn {turn.index}")
            if turn.index == 0 or turn.index > len(budgets):
                continue
            budget = budgets[turn.index - 1]
            if (ms := turn.latency_ms) is not None:
                latency.append(ms)
                overhead.append(ms - budget.reply_ms)
            if turn.barge_in:
                if (b := turn.barge_in_ms) is None:
                    failures.append(f"{r.call_sid[:10]}: no clear for the barge-in")
                else:
                    barge.append(b)
                    barge_over.append(b - budget.barge_in_wait_ms)
    return StepStats(
        calls=len(calls),
        overhead_ms=Dist.of(overhead),
        latency_ms=Dist.of(latency),
        greeting_ms=Dist.of(greeting),
        barge_in_ms=Dist.of(barge),
        barge_in_overhead_ms=Dist.of(barge_over),
        lateness_ms=Dist.of(lateness),
        starved=sum(1 for x in lateness if x >= STARVED_GAP_MS),
        failures=failures,
        tick_lag_ms=Dist.of(tick_lag_ms),
        call_minutes=minutes,
    )


def verdict(
    stats: StepStats, max_overhead_p95_ms: float = 20.0, max_tick_lag_p99_ms: float = 10.0
) -> tuple[bool, str]:
    """Whether one server sustained this many calls, and if not, why. A load generator that
    fell behind its own clock makes the step inconclusive, not a server failure."""
    if stats.tick_lag_ms.p99 is not None and stats.tick_lag_ms.p99 > max_tick_lag_p99_ms:
        return False, f"load generator behind its clock (p99 {stats.tick_lag_ms.p99:.1f} ms)"
    if stats.failures:
        return False, f"{len(stats.failures)} call failures, first: {stats.failures[0]}"
    if stats.overhead_ms.p95 is None:
        return False, "no turn completed"
    if stats.overhead_ms.p95 > max_overhead_p95_ms:
        return False, f"overhead p95 {stats.overhead_ms.p95:.1f} ms > {max_overhead_p95_ms:g} ms"
    if stats.starved:
        return False, f"{stats.starved} playout gaps of {STARVED_GAP_MS:g} ms or more"
    return True, "ok"


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ``ys`` over ``xs`` (e.g. peak RSS against live calls)."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])
