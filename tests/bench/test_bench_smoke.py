"""The benchmark suite's quick mode runs and produces numbers that are there and sane.

Targets are not asserted (a shared VM is noisy, and ``--quick`` sizes are not the targets' sizes):
each number must exist, be finite and positive, and lie within bounds no working run leaves
(a start-up in seconds, not hours; a latency in milliseconds, not seconds as milliseconds).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.paths import ROOT


def number(value: Any, low: float, high: float, what: str) -> float:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{what}: {value!r}"
    assert math.isfinite(value) and low < value < high, f"{what} = {value} not in ({low}, {high})"
    return float(value)


def stats(d: dict[str, Any], low: float, high: float, what: str) -> None:
    """A statistics dict of the suite: n samples, min <= p50 <= p99 <= max, all in (low, high)."""
    assert d["n"] >= 1, what
    values = [number(d[k], low, high, f"{what}.{k}") for k in ("min", "p50", "p99", "max")]
    assert values == sorted(values), f"{what}: min/p50/p99/max out of order: {values}"


def rss(d: dict[str, Any], what: str) -> None:
    number(d["rss_mb"], 10, 4000, f"{what} (MB)")  # a Python process: tens to hundreds of MB


def test_bench_quick_produces_sane_numbers(tmp_path: Path):
    out = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ERROR" not in proc.stdout, proc.stdout
    data = json.loads(out.read_text())
    b = data["benchmarks"]
    assert {"apply", "bigfile", "daemon", "handoff", "latency", "scale", "startup"} <= set(b), (
        sorted(b)
    )
    for name, result in b.items():
        assert "error" not in result, (name, result.get("error"))
        for row in result["rows"]:  # the printed table: every measurement has a value
            assert row[1] and not any(bad in str(row[1]).lower() for bad in ("nan", "inf")), (
                name,
                row,
            )
        for target in result.get("targets", []):
            assert target["value"] is not None and isinstance(target["met"], bool), (name, target)

    s = b["startup"]
    stats(s["handoff_s"], 0.01, 60, "startup handoff-lsp (s)")
    stats(s["jedi_s"], 0.01, 60, "startup jedi-language-server (s)")
    number(s["ratio"], 0, 100, "startup ratio")
    assert s["litellm_imported_before_initialize"] is False

    lat = b["latency"]
    for condition in ("idle_ms", "loaded_ms", "ready_ms", "ramp_ms"):
        for request in ("codeAction", "listSessions"):
            stats(lat[condition][request], 0.01, 10_000, f"latency {condition} {request} (ms)")
    stats(lat["delegate_ms"], 0.01, 10_000, "latency delegate answer (ms)")
    for phase in ("idle", "loaded", "ready"):
        rss(lat[f"rss_{phase}_mb"], f"server RSS {phase}")
    assert lat["final_states"] == {"ready": lat["sessions"]}, lat["final_states"]

    for h in b["handoff"]["sizes"]:
        for key in (
            "serial_worktree_add_s",
            "best_worktree_add_s",
            "cold_handoff_s",
            "warm_handoff_s",
            "in_process_snapshot_s",
            "in_process_add_worktree_s",
            "in_process_pool_take_s",
        ):
            stats(h[key], 0.0001, 600, f"handoff {key}")
        for kind in ("cold", "warm"):
            stats(h["delegate_answer_s"][kind], 0.0001, 60, f"handoff {kind} delegate answer (s)")
        number(h["pool_mb"], 0, 100_000, "handoff pool disk use (MB)")

    a = b["apply"]
    stats(a["apply_to_workspace_edit_s"], 0.0001, 60, "apply to applyEdit (s)")
    stats(a["apply_round_trip_s"], 0.0001, 120, "apply round trip (s)")
    assert a["document_changes"] >= a["files"], a["document_changes"]

    sc = b["scale"]
    number(sc["throughput_sessions_per_s"], 0, 10_000, "scale throughput (sessions/s)")
    assert sc["states"] == {"ready": sc["sessions"]} and sc["reloaded_ready"] == sc["sessions"], sc
    rss(sc["rss_all_ready_mb"], "scale server RSS all ready")
    for phase in ("idle", "loaded", "ready"):
        rss(lat[f"daemon_rss_{phase}_mb"], f"daemon RSS {phase}")
    rss(sc["daemon_rss_all_ready_mb"], "scale daemon RSS all ready")
    rss(sc["daemon_rss_after_restart_mb"], "scale daemon RSS after the restart")
    first, second = sc["daemon_pids"]
    assert first != second, "the restart found the same daemon: it was not stopped"

    d = b["daemon"]
    assert d["states"] == {"ready": d["sessions"]}, d["states"]
    # t0 and t1 are read by two clients in one event loop: a sample may be a little below zero
    stats(d["event_first_change_ms"], -50, 10_000, "daemon event -> list, first change (ms)")
    stats(d["event_ready_ms"], -50, 10_000, "daemon event -> list, ready (ms)")
    stats(d["ls_warm_s"], 0.01, 60, "handoff ls warm (s)")
    stats(d["ls_cold_s"], 0.01, 120, "handoff ls cold (s)")
    rss(d["daemon_rss_mb"], "daemon RSS")

    # No session daemon outlives the suite (a benchmark that leaves its own running has it
    # stopped by the runner, which records it as `daemons_left_running`).
    out_dir = str(ROOT / "bench" / "out").encode()
    running = []
    for proc_dir in Path("/proc").iterdir():
        try:
            cmdline = (proc_dir / "cmdline").read_bytes()
        except OSError:
            continue
        if b"handoff.agent.daemon" in cmdline and out_dir in cmdline:
            running.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    assert not running, running
