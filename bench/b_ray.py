"""Sessions on a Ray cluster against local ones: the cost of the hand-off, and throughput.

``python -m bench.b_ray [--files N] [--runs N]`` (needs the `ray` extra, root and unshare: the
head runs on 127.0.0.1 in a loopback-only network namespace, tests/support/ray_cluster.py).

On a copy of the benchmarks' generated repository (N text files, ~4 KB each, with dirty state),
with a command agent that appends one line to one file (so the agent itself costs ~50 ms and
the rest is Handoff's), for ``executor = "local"`` and ``executor = "ray"`` in turn (each with
its own state folder and daemon, the cluster's cache kept between them):

- **one session, end to end**: ``handoff run`` wall time, as a user types it (process start to
  the ready line: snapshot, worktree, the agent, the result; for Ray also the thin bundle to the
  cluster, the actor, its worktree on the worker, the result bundle back), median of ``--runs``
  after one warm-up run (which, for Ray, connects the daemon and fills the cluster's cache);
- **bytes shipped** to the cluster: the first session of the repository (the whole snapshot) and
  the next ones (thin against what the cluster's cache holds);
- **16 queued**: 16 ``handoff run`` at once (``maxParallel = 16``), first start to last ready:
  sessions per second.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import OUT, fresh_dir, generated_repo, machine

AGENT = """import pathlib, os
p = pathlib.Path("bench-notes.txt")
p.write_text((p.read_text() if p.exists() else "") + os.environ["HANDOFF_TASK"] + "\\n")
print("noted")
"""


def _run(repo: Path, env: dict[str, str], instruction: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "handoff.agent.cli", "run", instruction],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or "ready" not in proc.stdout:
        raise RuntimeError(f"handoff run failed: {proc.stdout}{proc.stderr}")
    return elapsed, proc.stdout.split()[0]


def _burst(repo: Path, env: dict[str, str], n: int) -> float:
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "handoff.agent.cli", "run", f"note {i}"],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for i in range(n)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    elapsed = time.perf_counter() - t0
    bad = [o for p, o in zip(procs, outs, strict=True) if p.returncode != 0]
    if bad:
        raise RuntimeError(f"{len(bad)} of {n} sessions failed: {bad[0]}")
    return elapsed


def measure(work: Path, source: Path, executor: str, address: str, runs: int, log) -> dict:
    from handoff.agent import trust
    from handoff.agent.client import status, stop_daemon

    repo = work / f"repo-{executor}"
    shutil.copytree(source, repo, symlinks=True)
    state = work / f"state-{executor}"
    state.mkdir()
    agent = work / "agent.py"
    agent.write_text(AGENT)
    (repo / ".handoff.toml").write_text(
        f'executor = "{executor}"\nagent = "note"\nmaxParallel = 16\n[pool]\nsize = 0\n'
        f'[ray]\naddress = "{address}"\n'
        f"[agents.note]\ncommand = {json.dumps([sys.executable, str(agent)])}\n"
    )
    env = {**os.environ, "HANDOFF_STATE_DIR": str(state)}
    trust.trust(repo, root=state)
    try:
        first, sid = _run(repo, env, "warm-up")
        shipped = []
        times = []
        for i in range(runs):
            t, sid2 = _run(repo, env, f"run {i}")
            times.append(t)
            if executor == "ray":
                st = status(state) or {}
                shipped.append(st["executor"]["remote"][sid2].get("shipped", 0))
        first_shipped = None
        if executor == "ray":
            first_shipped = (status(state) or {})["executor"]["remote"][sid].get("shipped")
        burst = _burst(repo, env, 16)
    finally:
        stop_daemon(state)
    out = {
        "warmupS": round(first, 3),
        "medianS": round(statistics.median(times), 3),
        "minS": round(min(times), 3),
        "maxS": round(max(times), 3),
        "burst16S": round(burst, 2),
        "sessionsPerS": round(16 / burst, 2),
    }
    if executor == "ray":
        out["firstShippedBytes"] = first_shipped
        out["shippedBytesMedian"] = int(statistics.median(shipped))
    log(f"  {executor}: {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support import ray_cluster

    why = ray_cluster.missing()
    if why:
        print(f"bench.b_ray: {why}", file=sys.stderr)
        return 2
    work = fresh_dir(OUT / "ray")
    source = generated_repo(args.files, log=print)
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    result: dict[str, Any] = {"machine": machine(), "files": args.files, "runs": args.runs}
    with ray_cluster.ray_head(num_cpus=16) as head:
        result["headStartS"] = round(head["startS"], 2)
        for executor in ("local", "ray"):
            result[executor] = measure(work, source, executor, head["address"], args.runs, print)
    with open("/proc/loadavg") as f:
        result["loadavg"] = {"before": load_before, "after": f.read().split()[:3]}
    (work / "ray.json").write_text(json.dumps(result, indent=2))
    loc, ray = result["local"], result["ray"]
    print(
        f"one session (handoff run, median of {args.runs}): local {loc['medianS']:.2f} s, "
        f"ray {ray['medianS']:.2f} s (+{ray['medianS'] - loc['medianS']:.2f} s)\n"
        f"shipped: first {ray['firstShippedBytes']} bytes, then {ray['shippedBytesMedian']} "
        f"bytes a session\n16 queued: local {loc['sessionsPerS']} sessions/s, "
        f"ray {ray['sessionsPerS']} sessions/s\nload average {result['loadavg']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
