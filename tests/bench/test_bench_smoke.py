"""``make bench`` in miniature: the real script, a few calls, a few seconds.

It starts the fakes, a real server process and the callers exactly as the full benchmark does,
so this proves the benchmark still runs and measures something sane. It asserts no timing
targets (the machine running tests is busy with other things), only that every figure exists
and lies in a plausible range, and that every call ran its script cleanly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_smoke_runs_and_reports_sane_numbers(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--smoke", "--no-write",
         "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Overhead per turn" in proc.stdout  # the table was printed
    report = json.loads(out.read_text())
    (step,) = report["steps"]
    assert step["calls"] == 3 and step["failure_count"] == 0, step["failures"]
    assert report["misses"] == {"recogniser": 0, "responder": 0}  # every line understood
    # every caller line got a reply, and its overhead is what is left after the known waits
    assert step["overhead_ms"]["n"] == 3 * len(report["lines"])
    assert -2.0 <= step["overhead_ms"]["p50"] <= step["overhead_ms"]["max"] < 2000.0
    budget = min(b["reply_ms"] for b in report["budgets"])
    assert step["latency_ms"]["p50"] >= budget  # no reply can beat the providers' own time
    assert 0.0 < step["greeting_ms"]["p50"] < 5000.0
    # each call barged in once; the agent was cleared after the VAD's wait, not before
    assert step["barge_in_ms"]["n"] == 3
    wait = max(b["barge_in_wait_ms"] for b in report["budgets"])
    assert wait <= step["barge_in_ms"]["p50"] < 5000.0
    assert step["lateness_ms"]["n"] > 0 and step["lateness_ms"]["p50"] >= 0.0
    # the server process was measured
    assert step["server_cpu_s"] > 0 and step["cpu_s_per_call_minute"] > 0
    assert step["rss_peak_mb"] >= step["rss_before_mb"] > 20
    assert report["server_exit"] == 0
    # replies started early on the recogniser's early end; each kept or discarded
    sp = report["speculation"]
    assert sp["started"] >= sp["kept"] + sp["discarded"] and sp["kept"] > 0


@pytest.mark.slow
def test_bench_scaling_runs_workers_and_measures_them_all(tmp_path):
    """``--scaling``: the same calls on ``serve --workers 2``, its CPU summed over the workers."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--smoke", "--scaling",
         "--scaling-workers", "2", "--no-write", "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    sc = report["scaling"]
    assert sc["workers"] == 2 and len(sc["server_cpus"]) == 2
    assert sc["one_worker_capacity"] == 3  # smoke: from its one step, passed or not
    (step,) = sc["steps"]
    assert step["calls"] == 6 and step["failure_count"] == 0
    assert step["overhead_ms"]["n"] == step["calls"] * len(report["lines"])
    one = report["steps"][0]
    # the parent and both workers are measured: more memory than one server process
    assert step["rss_before_mb"] > one["rss_before_mb"] * 1.5
    assert step["server_cpu_s"] > 0
    assert sc["ratio"] == round(sc["capacity"] / 6, 3)
    assert "workers on CPUs" in proc.stdout


@pytest.mark.slow
async def test_bench_embedded_section_measures_each_conversation() -> None:
    """The embedded providers' part of ``make bench``: a real ``serve`` with no API keys per
    conversation, the simulated caller's reply times, pieces on and off."""
    import os

    sys.path[:0] = [str(ROOT / "scripts")]
    from bench_embedded import embedded

    report = await embedded("smoke-token", os.sched_getaffinity(0), 1, 1, turns=1)
    for name in ("default", "long_pieces", "long_whole"):
        run = report[name]
        assert run["n"] == 1, (name, run)  # the one line got its reply
        assert 0 < run["p50"] == run["max"] < 20_000, (name, run)
