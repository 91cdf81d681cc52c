"""3. Handoff cost: ``handoff.delegate`` to the agent's first instruction, against git's own checkout.

The repositories: 20,000 and 100,000 generated files (~4 KB each; ``BENCH_HANDOFF_FILES`` picks
others), packed, with uncommitted work (20 modified tracked files, a staged change, 10 untracked
files) and, in the editor, one open buffer with unsaved changes. The agent is ``/bin/sh`` writing
``date +%s%N`` (wall clock, ns) to a file first thing: the time from sending the delegate request
to that stamp covers the LSP round trip, the server's ``delegate`` request to the session daemon
(with the unsaved buffer), the snapshot (temporary index + ``add -A`` + overlays +
``write-tree``/``commit-tree``), the brief, the session's worktree and the agent's process start.

Four things, interleaved (the order rotates every run; a ``sync`` before each, and the warm
daemon's pool refilled before each, so no background work lands on a measurement):

- **serial**: ``git worktree add -b <branch> <path> HEAD``, git's default;
- **best**: ``git -c checkout.workers=<cores> worktree add ...``, git's parallel checkout, the
  baseline the targets are against;
- **cold**: the handoff with ``pool.size = 0`` (a fresh ``git worktree add`` of the snapshot,
  with the same parallel checkout), its own daemon;
- **warm**: the handoff with the warm pool (``pool.size = 2``, ready): an idle worktree moved to
  the snapshot, only the files that differ written (agent/pool.py), its own daemon.

Then, for the breakdown, the pieces called in-process (``gitops.snapshot``, ``gitops.add_worktree``,
``Pool.take``: move + checkout of the difference + ``git clean -ffdx``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from . import agents, daemons
from .common import (
    GIT_ENV,
    OUT,
    du_mb,
    fresh_dir,
    generated_repo,
    git,
    median,
    reset_repo,
    server_env,
    summary,
    tracked_size_mb,
)
from .lsp import BenchClient, handoff_argv


def _sync() -> None:
    os.sync()
    time.sleep(0.2)


def _bare_add(repo: Path, path: Path, branch: str, commit: str, *extra: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        ["git", *extra, "worktree", "add", "--quiet", "-b", branch, str(path), commit],
        cwd=repo,
        check=True,
        env={**os.environ, **GIT_ENV},
    )
    return time.perf_counter() - t0


def _remove(repo: Path, path: Path, branch: str) -> None:
    git(repo, "worktree", "remove", "--force", "--force", str(path), check=False)
    shutil.rmtree(path, ignore_errors=True)
    git(repo, "worktree", "prune")
    git(repo, "branch", "-D", "-q", branch, check=False)


def _pool_ready(state: Path) -> int:
    n = 0
    for rec in state.glob("repos/*/pool/p-*.json"):
        try:
            n += json.loads(rec.read_text()).get("state") == "ready"
        except (OSError, ValueError):
            pass
    return n


async def _wait_pool(state: Path, n: int, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while _pool_ready(state) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the warm pool of {state} never had {n} idle worktrees")
        await asyncio.sleep(0.05)


def _files() -> list[int]:
    raw = os.environ.get("BENCH_HANDOFF_FILES")
    return [int(x) for x in raw.split(",") if x.strip()] if raw else []


async def _one_size(sizes, log, scratch: Path | None, n_files: int, runs: int) -> dict[str, Any]:
    source = generated_repo(n_files, log=log)
    base = fresh_dir((scratch or OUT) / f"handoff-{n_files}")
    if scratch is not None:  # the whole experiment on another file system (e.g. tmpfs)
        repo = base / source.name
        subprocess.run(["cp", "-a", str(source), str(repo)], check=True)
        # A copy has new inodes and ctimes: refresh the index's stat data once, as the developer's
        # own `git status` would, or every snapshot would hash all the files again.
        git(repo, "update-index", "-q", "--refresh", check=False)
    else:
        repo = source
    reset_repo(repo)
    head = git(repo, "rev-parse", "HEAD").strip()
    workers = os.cpu_count() or 1  # what gitops.add_worktree passes as checkout.workers
    stamps = base / "stamps"
    times: dict[str, list[float]] = {k: [] for k in ("serial", "best", "cold", "warm")}
    answered: dict[str, list[float]] = {"cold": [], "warm": []}
    discard: list[float] = []
    clients: dict[str, BenchClient] = {}
    states = {kind: base / f"state-{kind}" for kind in ("cold", "warm")}
    uris: dict[str, str] = {}
    origin = repo / "pkg00/mod0/file00000.py"
    try:
        for kind, size in (("cold", 0), ("warm", 2)):
            client = clients[kind] = BenchClient()
            await client.start(
                handoff_argv(),
                env=server_env(states[kind]),
                stderr_path=base / f"server-{kind}.stderr",
            )
            await client.initialize(
                repo,
                {
                    "agent": "marker",
                    "agents": {"marker": {"command": agents.marker(stamps)}},
                    "maxParallel": 4,
                    "pool": {"size": size},
                },
            )
            await client.list_sessions()
            uris[kind] = client.open(origin, origin.read_text() + "\n# unsaved in the editor\n")

        async def delegate(kind: str, i: int) -> tuple[float, float]:
            client = clients[kind]
            t0 = time.time_ns()
            r = await client.command(
                "handoff.delegate",
                {
                    "uri": uris[kind],
                    "range": {
                        "start": {"line": 2, "character": 0},
                        "end": {"line": 3, "character": 0},
                    },
                    "instruction": f"handoff cost run {i}",
                },
            )
            t_answer = time.time_ns()
            sid = r["sessionId"]
            stamp = stamps / f"{sid}.start"
            deadline = time.monotonic() + 1800
            while not (stamp.exists() and stamp.read_text().strip()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the agent of session {sid} never started")
                await asyncio.sleep(0.002)
            started = int(stamp.read_text().strip())
            await client.wait_sessions(
                lambda ss: any(
                    s["id"] == sid and s["state"] not in ("queued", "running") for s in ss
                ),
                1800,
                f"session {sid} to finish",
            )
            state = next(s["state"] for s in client.sessions if s["id"] == sid)
            if state != "ready":
                raise RuntimeError(f"session {sid} ended {state}")
            t = time.perf_counter()
            await client.command("handoff.discard", {"sessionId": sid})
            discard.append(time.perf_counter() - t)
            return (started - t0) / 1e9, (t_answer - t0) / 1e9

        def baseline(kind: str, i: int) -> float:
            path = base / kind / f"wt{i}"
            extra = ("-c", f"checkout.workers={workers}") if kind == "best" else ()
            try:
                return _bare_add(repo, path, f"bench/{kind}-{i}", head, *extra)
            finally:
                _remove(repo, path, f"bench/{kind}-{i}")

        async def settle() -> None:
            await _wait_pool(states["warm"], 2)  # no refill runs under a measurement
            _sync()

        log(
            f"  repository: {n_files} files, {tracked_size_mb(repo):.0f} MB tracked"
            f"{f', on {scratch}' if scratch else ''}"
        )
        if sizes.warmup:
            for kind in ("cold", "warm"):
                await settle()
                await delegate(kind, -1)
            await settle()
            baseline("best", -1)
        kinds = ("serial", "best", "cold", "warm")
        for i in range(runs):
            for kind in kinds[i % 4 :] + kinds[: i % 4]:
                await settle()
                if kind in ("serial", "best"):
                    times[kind].append(baseline(kind, i))
                else:
                    total, answer = await delegate(kind, i)
                    times[kind].append(total)
                    answered[kind].append(answer)
            log(
                f"  {n_files} files, run {i + 1}/{runs}: "
                + ", ".join(f"{k} {times[k][-1]:.2f} s" for k in kinds)
            )
        pool_mb = sum(
            json.loads(r.read_text()).get("bytes", 0)
            for r in states["warm"].glob("repos/*/pool/p-*.json")
        ) / (1 << 20)
    finally:
        for client in clients.values():
            await client.close()
        for state in states.values():  # before their state folders or worktrees go
            await asyncio.to_thread(daemons.stop, state)

    # Breakdown: the pieces in-process.
    from handoff.agent import gitops
    from handoff.agent.pool import Pool

    snap, add, take = [], [], []
    pool = Pool(repo, base / "parts" / "pool", threading.Lock())
    for i in range(max(1, min(runs, 3))):
        _sync()
        t0 = time.perf_counter()
        commit = gitops.snapshot(
            repo,
            ref=f"refs/handoff/bench{i}/base",
            overlays={"pkg00/mod0/file00000.py": b"unsaved\n"},
        )
        snap.append(time.perf_counter() - t0)
        wt = base / "parts" / f"wt{i}"
        _sync()
        t0 = time.perf_counter()
        gitops.add_worktree(repo, wt, branch=f"bench/part-{i}", commit=commit)
        add.append(time.perf_counter() - t0)
        _remove(repo, wt, f"bench/part-{i}")
        pool._size = 1
        pool._fill()
        _sync()
        t0 = time.perf_counter()
        assert pool.take(wt, branch=f"bench/take-{i}", commit=commit)
        take.append(time.perf_counter() - t0)
        _remove(repo, wt, f"bench/take-{i}")
    reset_repo(repo)
    if scratch is not None:
        shutil.rmtree(base, ignore_errors=True)

    best, serial = median(times["best"]), median(times["serial"])
    cold, warm = median(times["cold"]), median(times["warm"])
    label = f"{n_files} files" + (f", {scratch}" if scratch else ", disk")
    targets = [
        {
            "metric": f"cold handoff / git's best worktree add ({label})",
            "value": cold / best,
            "target": "<= 1.0",
            "met": cold / best <= 1.0,
        }
    ]
    if n_files <= 20_000:
        targets.append(
            {
                "metric": f"warm handoff / git's best worktree add ({label})",
                "value": warm / best,
                "target": "<= 0.2",
                "met": warm / best <= 0.2,
            }
        )
    else:
        targets.append(
            {
                "metric": f"warm handoff, delegate -> agent started ({label})",
                "value": f"{warm:.2f} s",
                "target": "< 1 s",
                "met": warm < 1.0,
            }
        )
    return {
        "files": n_files,
        "tracked_mb": tracked_size_mb(source),
        "disk_mb": du_mb(source),
        "scratch": str(scratch) if scratch else None,
        "runs": runs,
        "checkout_workers": workers,
        "serial_worktree_add_s": summary(times["serial"]),
        "best_worktree_add_s": summary(times["best"]),
        "cold_handoff_s": summary(times["cold"]),
        "warm_handoff_s": summary(times["warm"]),
        "delegate_answer_s": {k: summary(v) for k, v in answered.items()},
        "discard_s": summary(discard),
        "pool_mb": pool_mb,
        "in_process_snapshot_s": summary(snap),
        "in_process_add_worktree_s": summary(add),
        "in_process_pool_take_s": summary(take),
        "targets": targets,
        "rows": [
            (f"git worktree add, serial (git's default), {label}, median", f"{serial:.2f} s"),
            (
                f"git's best: checkout.workers={workers} worktree add, {label}, median",
                f"{best:.3f} s",
            ),
            (f"cold handoff (pool.size = 0), {label}, median", f"{cold:.3f} s"),
            (f"warm handoff (pool ready), {label}, median", f"{warm:.3f} s"),
            (f"  cold / best, warm / best ({label})", f"{cold / best:.2f} / {warm / best:.3f}"),
            (f"  snapshot (in-process, median), {label}", f"{median(snap) * 1000:.0f} ms"),
            (f"  gitops.add_worktree (in-process, median), {label}", f"{median(add):.3f} s"),
            (
                f"  Pool.take: move + checkout + clean (in-process, median), {label}",
                f"{median(take) * 1000:.0f} ms",
            ),
            (f"  pool disk use (2 idle worktrees), {label}", f"{pool_mb:.0f} MB"),
            (
                f"handoff.delegate answer cold / warm, {label}, median",
                f"{median(answered['cold']) * 1000:.0f} / {median(answered['warm']) * 1000:.0f} ms",
            ),
            (f"handoff.discard of a session, {label}, median", f"{median(discard):.2f} s"),
        ],
    }


async def _run(sizes, log, scratch: Path | None) -> dict[str, Any]:
    files = _files() or ([sizes.big_files, 100_000] if not sizes.quick else [sizes.big_files])
    runs_env = os.environ.get("BENCH_HANDOFF_RUNS")
    parts = []
    for n in files:
        runs = int(runs_env) if runs_env else sizes.handoff_runs * (2 if scratch else 1)
        if n > 20_000 and not runs_env:
            runs = max(1, runs // 2)
        parts.append(await _one_size(sizes, log, scratch, n, runs))
    return {
        "sizes": parts,
        "targets": [t for p in parts for t in p["targets"]],
        "rows": [r for p in parts for r in p["rows"]],
    }


def run(sizes, log, scratch: Path | None = None) -> dict[str, Any]:
    states = [
        (scratch or OUT) / f"handoff-{n}" / f"state-{k}"
        for n in (_files() or [sizes.big_files, 100_000])
        for k in ("cold", "warm")
    ]
    with daemons.stopped_after(*states):
        return asyncio.run(_run(sizes, log, scratch))
