"""``make bench``: what the framework costs per call, next to the providers it waits for.

Starts the cloud providers' wire-compatible fakes (from the test suite) with fixed latencies,
starts ``voice-agent serve`` as its own process pinned to one CPU with the providers pointed at
the fakes, and runs simulated Twilio callers against it: real speech in real time over Media
Streams, several turns each, one line barging in over the agent. The callers and the fakes run
in this process, pinned to another CPU, so they never take the server's.

It runs a ramp of concurrent calls on one server (stopping at the first step that fails),
prints the table for ``--calls`` and writes ``BENCHMARKS.md`` and a latency plot.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from bench_embedded import embedded  # noqa: E402
from bench_fakes import (  # noqa: E402
    GREETING,
    Latency,
    Script,
    barge_in_frames,
    endpoint_frames,
    running_fakes,
    speech_end_frames,
    tokens_to_first_piece,
)
from bench_server import ServerProcess  # noqa: E402

from app.bench.caller import CallerPlan, CallerPool, Line  # noqa: E402
from app.bench.report import markdown, merge, plot, table  # noqa: E402
from app.bench.stats import StepStats, TurnBudget, slope, summarise, verdict  # noqa: E402
from app.config import AgentSettings  # noqa: E402
from app.providers.deepgram import DeepgramOptions  # noqa: E402

AUTH_TOKEN = "bench-twilio-auth-token"
DEFAULT_RAMP = "5,10,15,20,25,30,40,50,60,75,100,125,150,200"
FRAME_MS = 20
USABLE_CPUS = frozenset(os.sched_getaffinity(0))  # before this process pins itself


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=50, help="the step the table reports")
    p.add_argument("--ramp", default=DEFAULT_RAMP, help="concurrent calls per step")
    p.add_argument("--turns", type=int, default=4, help="caller lines per call (max 4)")
    p.add_argument("--spread-s", type=float, default=8.0, help="calls of a step start within")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop the ramp after this")
    p.add_argument("--max-overhead-p95-ms", type=float, default=20.0)
    p.add_argument("--stt-final-ms", type=float, default=100.0)
    p.add_argument("--llm-first-token-ms", type=float, default=200.0)
    p.add_argument("--llm-tokens-per-s", type=float, default=40.0)
    p.add_argument("--tts-first-audio-ms", type=float, default=80.0)
    p.add_argument("--tts-speed", type=float, default=2.0, help="TTS audio vs real time")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--loadgen-cpu", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "bench-latency.png")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument(
        "--no-speculation", action="store_true", help="SPECULATIVE_REPLY=false on the server"
    )
    p.add_argument(
        "--scaling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="then the same ramp on N workers over N CPUs (default: on, off with --smoke)",
    )
    p.add_argument("--scaling-workers", type=int, default=0, help="N (0: the usable CPUs)")
    p.add_argument(
        "--embedded",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="then the embedded providers' reply time, one call at a time (default: on, off "
        "with --smoke)",
    )
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--profile", type=Path, help="run the server under cProfile, save here")
    p.add_argument("--server-log", type=Path, help="keep the server's log here")
    p.add_argument(
        "--smoke", action="store_true", help="a few calls, a few seconds: does it run at all"
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.calls, args.ramp, args.turns, args.spread_s = 3, "3", 2, 0.5
    if args.scaling is None:
        args.scaling = not args.smoke
    if args.embedded is None:
        args.embedded = not args.smoke
    return args


def pin(cpu: int | None) -> int | None:
    """Pin this process (callers and fakes) to ``cpu``; None when the machine has one CPU."""
    cpus = os.sched_getaffinity(0)
    if cpu is None or len(cpus) < 2 or cpu not in cpus:
        return None
    os.sched_setaffinity(0, {cpu})
    return cpu


def machine() -> dict[str, str]:
    model = "unknown"
    mem = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()),
        "cpu_model": model,
        "memory": mem,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def server_env(fakes_env: dict[str, str], speculative: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_URL", "_DSN"))}
    env.update(fakes_env)
    env.update(
        {
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,  # signatures checked, as in production
            "AGENT_GREETING": GREETING,
            "ENDPOINTING_MS": "0",
            "MAX_CONCURRENT_CALLS": "100000",
            "LOG_LEVEL": "info",
            "DRAIN_TIMEOUT_S": "5",
            "DRAIN_GRACE_S": "1",
            "CAMPAIGN_DIALER": "false",
            "SPECULATIVE_REPLY": "true" if speculative else "false",
        }
    )
    return env


def budgets(
    script: Script, latency: Latency, query: dict[str, list[str]], speculative: bool
) -> list[TurnBudget]:
    agent = AgentSettings()
    # The server asks Deepgram for an early end and confirms the rest of the usual endpointing
    # itself: its VAD's end of the run, or that rest of the silence after the final.
    full = DeepgramOptions().endpointing_ms
    early = int(query.get("endpointing", [str(full)])[0])
    out = []
    for _, clip, reply, _ in script.lines:
        k = tokens_to_first_piece(reply)
        model = latency.llm_first_token_ms + k * 1000.0 / latency.llm_tokens_per_s
        out.append(
            TurnBudget(
                endpoint_ms=endpoint_frames(clip, query) * FRAME_MS,
                app_endpointing_ms=float(agent.policy.endpointing_ms),
                stt_ms=latency.stt_final_ms,
                model_ms=model + latency.tts_first_audio_ms,
                confirm_ms=confirm_wait(
                    endpoint_frames(clip, query) * FRAME_MS + latency.stt_final_ms,
                    speech_end_frames(clip) * FRAME_MS,
                    max(0, full - early),
                ),
                barge_in_wait_ms=(
                    barge_in_frames(clip, agent.policy.barge_in_min_speech_ms) * FRAME_MS
                ),
                speculative=speculative,
            )
        )
    return out


def confirm_wait(final_ms: float, vad_end_ms: float, rest_ms: float) -> float:
    """How long after the final the server confirms the turn: at once if its VAD had already
    ended the run, else at the VAD's end or after the rest of the silence, whichever is first."""
    if rest_ms <= 0 or vad_end_ms <= final_ms:
        return 0.0
    return min(vad_end_ms - final_ms, rest_ms)


async def run_step(
    server: ServerProcess, plan: CallerPlan, n: int, spread_s: float, turn_budgets: list
) -> tuple[StepStats, dict]:
    peak = server.rss_bytes()
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, server.rss_bytes())
            await asyncio.sleep(0.25)

    rss_before = server.rss_bytes()
    cpu0, wall0, own0 = server.cpu_seconds(), time.monotonic(), time.process_time()
    sampler = asyncio.create_task(sample())
    # A full collection of this process's heap stalls the callers and the fakes for tens of
    # ms, which the server would be blamed for: collect between steps, not during them.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        run = await CallerPool(server.url, plan).run(n, spread_s)
    finally:
        gc.enable()
        stop.set()
        await sampler
    cpu = server.cpu_seconds() - cpu0
    wall = time.monotonic() - wall0
    own = time.process_time() - own0  # the callers' and fakes' CPU
    stats = summarise(run.calls, turn_budgets, run.tick_lag_ms)
    extra = {
        "server_cpu_s": round(cpu, 3),
        "wall_s": round(wall, 2),
        "server_cpu_share": round(cpu / wall, 3),
        "harness_cpu_share": round(own / wall, 3),
        "cpu_s_per_call_minute": round(cpu / stats.call_minutes, 4) if stats.call_minutes else None,
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_peak_mb": round(peak / 2**20, 1),
    }
    return stats, extra


def step_record(n: int, stats: StepStats, extra: dict, ok: bool, why: str) -> dict:
    return {
        "calls": n,
        "ok": ok,
        "verdict": why,
        "overhead_ms": stats.overhead_ms.as_dict(),
        "latency_ms": stats.latency_ms.as_dict(),
        "greeting_ms": stats.greeting_ms.as_dict(),
        "barge_in_ms": stats.barge_in_ms.as_dict(),
        "barge_in_overhead_ms": stats.barge_in_overhead_ms.as_dict(),
        "lateness_ms": stats.lateness_ms.as_dict(),
        "starved": stats.starved,
        "failures": stats.failures[:5],
        "failure_count": len(stats.failures),
        "loadgen_tick_lag_ms": stats.tick_lag_ms.as_dict(),
        "call_minutes": round(stats.call_minutes, 2),
        **extra,
    }


async def ramp(
    server: ServerProcess,
    plan: CallerPlan,
    steps: list[int],
    turn_budgets: list,
    args: argparse.Namespace,
    started: float,
    table_calls: int,
) -> tuple[list[dict], int, str]:
    """Steps of concurrent calls on one server: their records, the capacity (the most calls
    before the first failing step) and why the ramp stopped."""
    results: list[dict] = []
    capacity, stopped, failed = 0, "every step passed", False
    for n in steps:
        if time.monotonic() - started > args.budget_s and n > table_calls:
            stopped = f"time budget ({args.budget_s:g} s) spent"
            break
        stats, extra = await run_step(server, plan, n, args.spread_s, turn_budgets)
        ok, why = verdict(stats, args.max_overhead_p95_ms)
        results.append(step_record(n, stats, extra, ok, why))
        o = stats.overhead_ms
        print(
            f"{n:4d} calls: overhead p50/p95/p99 {o.p50 or 0:.1f}/{o.p95 or 0:.1f}/"
            f"{o.p99 or 0:.1f} ms, server cpu {extra['server_cpu_share']:.0%}, "
            f"rss {extra['rss_peak_mb']} MB: {why}",
            flush=True,
        )
        if ok and not failed:
            capacity = n
        elif not ok and not failed:
            failed, stopped = True, f"first failure at {n} calls: {why}"
        if failed and n >= table_calls:
            break  # (the steps up to table_calls always run: the table needs them)
        await asyncio.sleep(1.0)  # let the last calls' records settle
    return results, capacity, stopped


def scaling_steps(ramp: list[int], one: int, workers: int) -> list[int]:
    """The ramp's steps for N workers: from half one worker's capacity up to past N times it."""
    steps = [n for n in ramp if one // 2 <= n <= one * workers * 1.25]
    return steps or [one * workers]


async def bench(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    loadgen_cpu = pin(args.loadgen_cpu)
    server_cpu = args.server_cpu if loadgen_cpu is not None else None
    latency = Latency(
        args.stt_final_ms,
        args.llm_first_token_ms,
        args.llm_tokens_per_s,
        args.tts_first_audio_ms,
        args.tts_speed,
    )
    script = await asyncio.to_thread(Script.render, args.turns)
    plan = CallerPlan(
        lines=tuple(Line(t, c, b) for t, c, _, b in script.lines), auth_token=AUTH_TOKEN
    )
    steps = sorted({int(x) for x in args.ramp.split(",") if x.strip()} | {args.calls})
    load_before = os.getloadavg()
    scaling: dict | None = None
    with tempfile.TemporaryDirectory(prefix="voice-agent-bench-") as tmp:
        async with running_fakes(script, latency) as fakes:
            env = server_env(fakes.env, not args.no_speculation)
            cpus = None if server_cpu is None else {server_cpu}
            server = ServerProcess(env, Path(tmp), cpus, args.profile)
            server.start()
            try:
                await server.wait_ready()
                print(f"server pid {server.pid} on cpu {server_cpu}; callers on {loadgen_cpu}")
                # One call first: connection pools, caches and lazy imports warm up.
                warm = CallerPlan(lines=plan.lines[:1], auth_token=AUTH_TOKEN)
                await CallerPool(server.url, warm).run(1, 0.0)
                rss_idle = server.rss_bytes()
                turn_budgets = budgets(
                    script, latency, fakes.deepgram.queries[0], not args.no_speculation
                )
                results, capacity, stopped = await ramp(
                    server, plan, steps, turn_budgets, args, started, args.calls
                )
            finally:
                code = await asyncio.to_thread(server.stop)
                log_tail = server.tail(5)
                speculation = speculation_counts(server.log_path)
                if args.server_log is not None:
                    shutil.copyfile(server.log_path, args.server_log)
            one = capacity or (args.calls if args.smoke else 0)  # smoke: does it run at all
            if args.scaling and one and len(USABLE_CPUS) >= 2:
                scaling = await scale_out(env, Path(tmp), plan, turn_budgets, args, one)
        misses = {
            "recogniser": getattr(fakes.recogniser, "misses", 0),
            "responder": getattr(fakes.responder, "misses", 0),
        }
        missed = getattr(fakes.responder, "missed", [])
    local = await embedded(AUTH_TOKEN, set(USABLE_CPUS)) if args.embedded else None
    ok_steps = [r for r in results if r["ok"]]
    rss_slope = slope([0] + [r["calls"] for r in ok_steps],
                      [rss_idle / 2**20] + [r["rss_peak_mb"] for r in ok_steps])  # fmt: skip
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "make bench"
        if not sys.argv[1:]
        else "python scripts/bench.py " + shlex.join(sys.argv[1:]),
        "machine": machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "pinned": {"server_cpu": server_cpu, "loadgen_cpu": loadgen_cpu},
        "latency": _fields(latency),
        "budgets": [
            _fields(b) | {"reply_ms": b.reply_ms, "providers_ms": b.providers_ms}
            for b in turn_budgets
        ],
        "lines": [t for t, _, _, _ in script.lines],
        "deepgram_query": {k: v[0] for k, v in fakes.deepgram.queries[0].items()},
        "rss_idle_mb": round(rss_idle / 2**20, 1),
        "rss_per_call_mb": None if rss_slope is None else round(rss_slope, 3),
        "steps": results,
        "main_calls": args.calls,
        "spread_s": args.spread_s,
        "settle_ms": [plan.settle_ms, plan.settle_ms + plan.settle_jitter_ms],
        "capacity": capacity,
        "stopped": stopped,
        "scaling": scaling,
        "embedded": local,
        "speculation": speculation,
        "misses": misses,
        "missed": missed,
        "server_exit": code,
        "server_log_tail": log_tail if code else "",
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def speculation_counts(log_path: Path) -> dict[str, int]:
    """Speculative replies over the run (the warm-up call included): started, kept (the
    confirmed turn said the same) and discarded (the caller went on, or said otherwise)."""
    counts = {"started": 0, "kept": 0, "discarded": 0}
    with open(log_path, errors="replace") as log:
        for line in log:
            if '"speculation_' not in line:
                continue
            with contextlib.suppress(ValueError):
                kind = json.loads(line).get("event", "").removeprefix("speculation_")
                if kind in counts:
                    counts[kind] += 1
    return counts


async def scale_out(
    env: dict[str, str],
    tmp: Path,
    plan: CallerPlan,
    turn_budgets: list,
    args: argparse.Namespace,
    one: int,
) -> dict:
    """The same ramp on ``voice-agent serve --workers N``, one worker per CPU, from half one
    worker's capacity up. N is the usable CPUs less one for the callers and fakes; on a
    2-CPU machine N is 2 and they share the server's CPUs, and the report says so."""
    usable = sorted(USABLE_CPUS)
    # One CPU is kept for the callers and fakes when the machine has three or more.
    fit = len(usable) - 1 if len(usable) >= 3 else len(usable)
    n = fit if args.scaling_workers == 0 else args.scaling_workers
    n = max(2, min(n, len(usable)))
    server_cpus = set(usable[:n])
    spare = usable[n:]
    os.sched_setaffinity(0, {spare[0]} if spare else set(usable))
    workdir = tmp / "workers"
    workdir.mkdir()
    # The machine's cap is workers x MAX_CONCURRENT_CALLS: unbounded here, as for one worker.
    server = ServerProcess({**env, "WORKERS": str(n)}, workdir, server_cpus, None)
    server.start()
    try:
        await server.wait_ready()
        print(f"scaling: {n} workers (pid {server.pid}) on cpus {sorted(server_cpus)}; "
              f"callers on {'cpu ' + str(spare[0]) if spare else 'the same cpus'}")  # fmt: skip
        warm = CallerPlan(lines=plan.lines[:1], auth_token=AUTH_TOKEN)
        await CallerPool(server.url, warm).run(2, 0.0)
        ramp_steps = sorted({int(x) for x in args.ramp.split(",") if x.strip()})
        steps = [one * n] if args.smoke else scaling_steps(ramp_steps, one, n)
        results, capacity, stopped = await ramp(
            server, plan, steps, turn_budgets, args, time.monotonic(), 0
        )
    finally:
        await asyncio.to_thread(server.stop)
    return {
        "workers": n,
        "server_cpus": sorted(server_cpus),
        "callers_own_cpu": bool(spare),
        "one_worker_capacity": one,
        "capacity": capacity,
        "ratio": round(capacity / (n * one), 3),
        "stopped": stopped,
        "steps": results,
    }


def _fields(obj: object) -> dict:
    return {k: getattr(obj, k) for k in getattr(obj, "__slots__", ())}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(bench(args))
    print()
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if not args.no_write:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(report, args.plot)
        rel = os.path.relpath(args.plot, args.out.parent)
        old = args.out.read_text() if args.out.exists() else None
        args.out.write_text(merge(old, markdown(report, rel)))
        print(f"\nwrote {os.path.relpath(args.out)} and {os.path.relpath(args.plot)}")
    main_step = next((s for s in report["steps"] if s["calls"] == args.calls), None)
    return 0 if main_step is not None and not main_step["failure_count"] else 1


if __name__ == "__main__":
    sys.exit(main())
