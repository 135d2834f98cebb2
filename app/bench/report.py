"""The benchmark's results as a console table, ``BENCHMARKS.md`` and a PNG plot.

Input is the plain dictionary ``scripts/bench.py`` builds (and can save as JSON), so a report can
be re-rendered from a saved run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

Report = dict[str, Any]

TARGETS = {
    "overhead_p95_ms": 10.0,  # at 50 concurrent calls
    "greeting_ms": 150.0,
    "barge_in_ms": 150.0,
    "capacity": 100,
    "rss_per_call_mb": 10.0,
}


def _f(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ok(good: bool | None) -> str:
    return "—" if good is None else ("yes" if good else "**no**")


def main_step(report: Report) -> Report | None:
    return next((s for s in report["steps"] if s["calls"] == report["main_calls"]), None)


def rows(report: Report) -> list[list[str]]:
    """[metric, p50, p95, p99, target, met] for the main step."""
    s = main_step(report)
    if s is None:
        return []
    out: list[list[str]] = []

    def dist(name: str, key: str, target: str, limit: float | None) -> None:
        d = s[key]
        met = None if limit is None or d["p95"] is None else d["p95"] <= limit
        out.append([name, _f(d["p50"]), _f(d["p95"]), _f(d["p99"]), target, _ok(met)])

    n = s["calls"]
    dist(
        f"Overhead per turn, ms ({n} calls)", "overhead_ms", "p95 ≤ 10", TARGETS["overhead_p95_ms"]
    )
    dist("Reply time incl. providers, ms", "latency_ms", "(budget below)", None)
    dist("Greeting: start → first audio, ms", "greeting_ms", "≤ 150", TARGETS["greeting_ms"])
    dist("Barge-in: onset → clear, ms", "barge_in_ms", "≤ 150", TARGETS["barge_in_ms"])
    dist("  of which ours (minus VAD's wait), ms", "barge_in_overhead_ms", "", None)
    late = s["lateness_ms"]
    out.append(
        [
            "Outbound audio lateness, ms",
            _f(late["p50"]),
            _f(late["p95"]),
            _f(late["p99"]),
            "never starved",
            _ok(s["starved"] == 0),
        ]
    )
    cpm = s["cpu_s_per_call_minute"]
    out.append(
        [
            "Server CPU s per call-minute",
            _f(cpm, 3),
            "",
            "",
            "≪ 30 (0.5 vCPU)",
            _ok(None if cpm is None else cpm < 30),
        ]
    )
    rss = report["rss_per_call_mb"]
    out.append(
        [
            "RSS per added call, MB",
            _f(rss, 2),
            "",
            "",
            "≤ 10",
            _ok(None if rss is None else rss <= TARGETS["rss_per_call_mb"]),
        ]
    )
    cap = report["capacity"]
    out.append(
        [
            "Calls on one core (p95 ≤ 20 ms)",
            str(cap),
            "",
            "",
            "≥ 100",
            _ok(cap >= TARGETS["capacity"]),
        ]
    )
    return out


def _grid(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def table(report: Report) -> str:
    head = ["Metric", "p50", "p95", "p99", "Target", "Met"]
    body = rows(report)
    ramp = [
        [
            str(s["calls"]),
            "/".join(_f(s["overhead_ms"][k]) for k in ("p50", "p95", "p99")),
            _f(s["greeting_ms"]["p95"]),
            _f(s["barge_in_ms"]["p95"]),
            _f(s["lateness_ms"]["p99"]),
            f"{s['server_cpu_share']:.0%}",
            _f(s["rss_peak_mb"]),
            _f(s["loadgen_tick_lag_ms"]["p99"]),
            s["verdict"][:60],
        ]
        for s in report["steps"]
    ]
    ramp_head = ["calls", "overhead p50/95/99", "greet p95", "barge p95", "late p99",
                 "cpu", "rss MB", "gen lag p99", "verdict"]  # fmt: skip
    parts = [
        _grid(head, body) if body else "(the main step did not run)",
        "",
        _grid(ramp_head, ramp),
    ]
    parts.append(f"\ncapacity on one core: {report['capacity']} calls ({report['stopped']})")
    if report.get("speculation"):
        parts.append(speculation_line(report["speculation"]))
    sc = report.get("scaling")
    if sc:
        parts.append(scaling_line(sc))
    if report.get("embedded"):
        parts.append(embedded_line(report["embedded"]))
    return "\n".join(parts)


def speculation_line(sp: Report) -> str:
    return (
        f"speculative replies: {sp['started']} started, {sp['kept']} kept, "
        f"{sp['discarded']} discarded"
    )


def embedded_line(em: Report) -> str:
    """One line: the embedded providers' reply medians."""
    return (
        f"embedded providers, reply p50: default conversation {_f(em['default']['p50'], 0)} ms "
        f"(target <= 800); long turns {_f(em['long_pieces']['p50'], 0)} ms in pieces, "
        f"{_f(em['long_whole']['p50'], 0)} ms decoded whole"
    )


def _speculation_md(sp: Report | None) -> str:
    if not sp:
        return ""
    return (
        f"Over the whole ramp, {speculation_line(sp)} (a reply started at the recogniser's early "
        "end; discarded when the caller went on after a short pause)."
    )


def embedded_md(em: Report | None) -> str:
    if not em:
        return "Not run (`--no-embedded` or `--smoke`)."
    rows = [
        [label, str(em[k]["n"]), _f(em[k]["p50"], 0), _f(em[k]["max"], 0)]
        for label, k in (
            ("`voice-agent call` default conversation (short lines, decoded whole)", "default"),
            ("long turns (8-10 s, pauses of 300 ms), transcribed in pieces", "long_pieces"),
            ("the same long turns, `WHISPER_PIECE_MS=0` (decoded whole)", "long_whole"),
        )
    ]
    head = ["Conversation", "Replies", "Reply p50 ms", "Reply max ms"]
    return f"{embedded_line(em)}.\n\n{_md(head, rows)}"


def scaling_line(sc: Report) -> str:
    """One line: N workers' capacity against N times one worker's."""
    where = "callers on a CPU of their own" if sc["callers_own_cpu"] else (
        "callers and fakes sharing those CPUs"
    )
    return (
        f"{sc['workers']} workers on CPUs {sc['server_cpus']} ({where}): capacity "
        f"{sc['capacity']} calls = {sc['ratio']:.2f} x {sc['workers']} x one worker's "
        f"{sc['one_worker_capacity']} (target >= 0.85; {sc['stopped']})"
    )


def scaling_md(sc: Report | None) -> str:
    if not sc:
        return "Not run (one usable CPU, or `--no-scaling`)."
    rows = [
        [
            str(s["calls"]),
            " / ".join(_f(s["overhead_ms"][k]) for k in ("p50", "p95", "p99")),
            f"{s['server_cpu_share']:.0%}",
            f"{s.get('harness_cpu_share', 0):.0%}",
            _f(s["cpu_s_per_call_minute"], 3),
            _f(s["loadgen_tick_lag_ms"]["p99"]),
            s["verdict"].replace("|", "/"),
        ]
        for s in sc["steps"]
    ]
    head = ["Calls", "Overhead p50 / p95 / p99 ms", "Server CPU (all workers)",
            "Callers + fakes CPU", "CPU s/call-min", "Caller clock lag p99", "Verdict"]  # fmt: skip
    return f"{scaling_line(sc)}.\n\n{_md(head, rows)}"


def _md(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def markdown(report: Report, plot_path: str) -> str:
    m = report["machine"]
    lat = report["latency"]
    b = report["budgets"]
    head = ["Metric", "p50", "p95", "p99", "Target", "Met"]
    ramp = [
        [
            str(s["calls"]),
            " / ".join(_f(s["overhead_ms"][k]) for k in ("p50", "p95", "p99")),
            _f(s["latency_ms"]["p50"], 0),
            _f(s["greeting_ms"]["p95"]),
            _f(s["barge_in_ms"]["p95"]),
            _f(s["lateness_ms"]["p99"]),
            str(s["starved"]),
            f"{s['server_cpu_share']:.0%}",
            _f(s["cpu_s_per_call_minute"], 3),
            _f(s["rss_peak_mb"]),
            _f(s["loadgen_tick_lag_ms"]["p99"]),
            s["verdict"].replace("|", "/"),
        ]
        for s in report["steps"]
    ]
    ramp_head = ["Calls", "Overhead p50 / p95 / p99 ms", "Reply p50 ms", "Greeting p95",
                 "Barge-in p95", "Lateness p99", "Starved", "Server CPU", "CPU s/call-min",
                 "Peak RSS MB", "Caller clock lag p99", "Verdict"]  # fmt: skip
    budget_lines = "\n".join(
        f"- line {i + 1} “{text}”: endpoint {x['endpoint_ms']:.0f} ms + session "
        f"{x['app_endpointing_ms']:.0f} ms + providers {x['providers_ms']:.0f} ms"
        f"{' (the model overlapping the confirmation)' if x.get('speculative') else ''} = "
        f"{x['reply_ms']:.0f} ms; the server's VAD pauses the agent after "
        f"{x['barge_in_wait_ms']:.0f} ms of this line"
        for i, (text, x) in enumerate(zip(report["lines"], b, strict=True))
    )
    return f"""{START}
## Result ({report["main_calls"]} concurrent calls)

{_md(head, rows(report))}

Capacity: **{report["capacity"]}** concurrent calls on one core ({report["stopped"]}).
Idle server RSS {report["rss_idle_mb"]} MB. {_speculation_md(report.get("speculation"))}

![Overhead per turn against concurrent calls]({plot_path})

## Ramp (one server process, pinned to one CPU)

{_md(ramp_head, ramp)}

A step passes when overhead p95 ≤ 20 ms, no playout gap of a frame (20 ms) or more, and every
call ran its script with no error, protocol violation or missing reply. A step where the
simulated callers fell behind their own clock (lag p99 > 10 ms) proves nothing about the server
and counts as failed (inconclusive). Capacity is the most calls before the first failing step;
the ramp always runs up to the table's {report["main_calls"]} calls, then stops at the first
failure.

## Scaling (`--workers N`, one worker per CPU)

{scaling_md(report.get("scaling"))}

## Embedded providers (no API keys, one call at a time)

`voice-agent serve` with Whisper tiny.en, the eSpeak voice and the scripted agent, on all the
machine's CPUs; the caller is the simulated Twilio caller of `voice-agent call`. The reply is
timed from the end of the caller's speech to the agent's first audio.

{embedded_md(report.get("embedded"))}

## How it is measured

- **Server:** `voice-agent serve` in its own process, pinned to CPU {report["pinned"]["server_cpu"]}
  with `sched_setaffinity`; Deepgram, Claude and ElevenLabs are the test suite's wire-compatible
  fakes on 127.0.0.1, reached through the real SDKs; Twilio signatures are checked; logs at info.
- **Callers and fakes:** this script's process, pinned to CPU {report["pinned"]["loadgen_cpu"]}.
  Callers are a lean driver of the call simulator's wire, TwiML and playback-clock modules: one
  shared 20 ms clock for all calls, in 4 phases of 5 ms, one receiver task per socket. Each
  call speaks eSpeak NG lines in real time ({len(report["lines"])} lines, the second barging in
  700 ms after the agent's reply starts), waits for each reply to play out and a pause drawn
  per turn from {report["settle_ms"][0]}–{report["settle_ms"][1]} ms (so that callers on one
  script do not reach each turn in lockstep), then hangs up. The calls of a step start evenly
  over {report["spread_s"]:g} s and overlap for most of their ~25 s.
- **Injected provider time:** STT final {lat["stt_final_ms"]:g} ms after Deepgram's endpoint
  (endpointing={report["deepgram_query"].get("endpointing")} ms as the server asks for it), LLM
  first token {lat["llm_first_token_ms"]:g} ms then {lat["llm_tokens_per_s"]:g} tokens/s, TTS
  first audio {lat["tts_first_audio_ms"]:g} ms then {lat["tts_speed"]:g}× real time.
- **Overhead per turn** = caller speech end → first agent audio received, minus, per line:
{budget_lines}
  The endpoint wait is computed by running the fake recogniser's own engine over the clip; the
  tokens before the first piece by running the session's sentence splitter over the reply.
  Sleep overshoot in the fakes and the callers' own scheduling lag count as overhead, so the
  figure is an upper bound.
- **Greeting** = `start` sent → first agent audio; **barge-in** = first frame of the
  interrupting line sent → `clear` received (the server's VAD needs ~100–120 ms of speech
  first); **lateness** = how late each agent media message arrived after the audio before it
  had finished playing (0 when Twilio's buffer still held audio).
- **CPU** = the server process's user+system time (`/proc/<pid>/stat`) over the step, divided by
  the call-minutes in it. **RSS per added call** = slope of peak RSS over concurrent calls.

## Machine

- {m["cpus"]} CPUs ({m["cpu_model"]}), {m["memory"]} memory, {m["os"]}, Python {m["python"]}
- load average before/after: {report["load_average_before"]} / {report["load_average_after"]}
  (other work on the machine shows up as overhead)
- date: {report["date"]}
- command: `{report["command"]}` ({report["elapsed_s"]:.0f} s)
{END}"""


START = "<!-- bench:results:start (scripts/bench.py rewrites from here to the end marker) -->"
END = "<!-- bench:results:end -->"
HEADER = """# Benchmarks

What the framework itself costs per call, next to the providers it waits for. `make bench`
(`scripts/bench.py`) rewrites the results below and the plot; the notes after them are kept.
"""


def merge(existing: str | None, results: str) -> str:
    """``results`` in place of the previous results block; everything else is kept."""
    if existing and START in existing and END in existing:
        head, rest = existing.split(START, 1)
        tail = rest.split(END, 1)[1]
        return head + results + tail
    return HEADER + "\n" + results + "\n"


def plot(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = report["steps"]
    x = [s["calls"] for s in steps]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for key, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
        top.plot(x, [s["overhead_ms"][key] for s in steps], style, label=f"overhead {key}")
    top.plot(x, [s["barge_in_overhead_ms"]["p95"] for s in steps], "x--",
             label="barge-in, ours, p95")  # fmt: skip
    top.axhline(20, color="grey", linestyle=":", label="capacity limit (p95 20 ms)")
    top.axhline(10, color="green", linestyle=":", label="target (p95 10 ms at 50 calls)")
    top.set_ylabel("ms added by the framework")
    top.set_title("Overhead per turn against concurrent calls (server on one CPU)")
    top.legend(fontsize=8)
    top.grid(alpha=0.3)
    bottom.plot(x, [100 * s["server_cpu_share"] for s in steps], "o-", color="tab:red")
    bottom.set_ylabel("server CPU, % of one core")
    bottom.set_xlabel("concurrent calls")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
