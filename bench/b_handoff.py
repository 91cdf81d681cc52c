"""3. Handoff cost: ``handoff.delegate`` to the agent's first instruction, vs a bare ``git worktree add``.

The repository: ``big_files`` generated files (~4 KB each), packed, with uncommitted work (20
modified tracked files, a staged change, 10 untracked files) and, in the editor, one open buffer
with unsaved changes. The agent is ``/bin/sh`` writing ``date +%s%N`` (wall clock, ns) to a file
first thing: the time from sending the delegate request to that stamp covers the LSP round trip,
the server's ``delegate`` request to the session daemon (with the unsaved buffer), the snapshot (temporary index + ``add -A`` + overlays + ``write-tree``/``commit-tree``), the brief,
``git worktree add`` of the snapshot and the agent's process start.

The baseline (the target's) is ``git worktree add -b <branch> <path> HEAD`` on the same
repository, the same file system, run by the benchmark itself. Handoff's own ``gitops.add_worktree``
runs ``git -c checkout.workers=<cpus> worktree add`` (parallel checkout), so a second, informational
baseline is bare git with that same option, and the ratio against it: what Handoff costs beyond
git's own checkout, and how much of the gain over the plain baseline is git's parallel checkout.
Runs are interleaved (the order rotates every run) with a ``sync`` before each, so earlier runs'
write-back does not land on the next one.

Then, for the breakdown, the two halves called in-process (``gitops.snapshot``,
``gitops.add_worktree``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
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


async def _run(sizes, log, scratch: Path | None) -> dict[str, Any]:
    source = generated_repo(sizes.big_files, log=log)
    base = fresh_dir((scratch or OUT) / "handoff")
    if scratch is not None:  # the whole experiment on another file system (e.g. tmpfs)
        repo = base / source.name
        subprocess.run(["cp", "-a", str(source), str(repo)], check=True)
        # A copy has new inodes and ctimes: refresh the index's stat data once, as the developer's
        # own `git status` would, or every snapshot would hash all the files again.
        git(repo, "update-index", "-q", "--refresh", check=False)
    else:
        repo = source
    reset_repo(repo)
    state = base / "state"
    head = git(repo, "rev-parse", "HEAD").strip()
    stamps = base / "stamps"
    init = {
        "agent": "marker",
        "agents": {"marker": {"command": agents.marker(stamps)}},
        "maxParallel": 4,
    }
    client = BenchClient()
    workers = os.cpu_count() or 1  # what gitops.add_worktree passes as checkout.workers
    bare: list[float] = []
    parallel: list[float] = []  # bare git with checkout.workers
    handoff: list[float] = []
    answered: list[float] = []
    discard: list[float] = []
    try:
        await client.start(
            handoff_argv(), env=server_env(state), stderr_path=base / "server.stderr"
        )
        await client.initialize(repo, init)
        await client.list_sessions()
        origin = repo / "pkg00/mod0/file00000.py"
        uri = client.open(origin, origin.read_text() + "\n# unsaved in the editor\n")

        async def delegate(i: int) -> tuple[float, float]:
            t0 = time.time_ns()
            r = await client.command(
                "handoff.delegate",
                {
                    "uri": uri,
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
            deadline = time.monotonic() + 600
            while not (stamp.exists() and stamp.read_text().strip()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the agent of session {sid} never started")
                await asyncio.sleep(0.002)
            started = int(stamp.read_text().strip())
            await client.wait_sessions(
                lambda ss: any(
                    s["id"] == sid and s["state"] not in ("queued", "running") for s in ss
                ),
                600,
                f"session {sid} to finish",
            )
            state = next(s["state"] for s in client.sessions if s["id"] == sid)
            if state != "ready":
                raise RuntimeError(f"session {sid} ended {state}")
            t = time.perf_counter()
            await client.command("handoff.discard", {"sessionId": sid})
            discard.append(time.perf_counter() - t)
            return (started - t0) / 1e9, (t_answer - t0) / 1e9

        def baseline(i: int, *extra: str) -> float:
            kind = "par" if extra else "bare"
            path = base / kind / f"wt{i}"
            try:
                return _bare_add(repo, path, f"bench/{kind}-{i}", head, *extra)
            finally:
                _remove(repo, path, f"bench/{kind}-{i}")

        log(
            f"  repository: {sizes.big_files} files, {tracked_size_mb(repo):.0f} MB tracked"
            f"{f', on {scratch}' if scratch else ''}"
        )
        if sizes.warmup:
            _sync()
            await delegate(-1)
            _sync()
            baseline(-1)
        runs = sizes.handoff_runs * (3 if scratch is not None else 1)  # cheap on tmpfs, and noisier
        kinds = ("bare", "handoff", "parallel")
        for i in range(runs):
            for which in kinds[i % 3 :] + kinds[: i % 3]:
                _sync()
                if which == "bare":
                    bare.append(baseline(i))
                elif which == "parallel":
                    parallel.append(baseline(i, "-c", f"checkout.workers={workers}"))
                else:
                    total, answer = await delegate(i)
                    handoff.append(total)
                    answered.append(answer)
            log(
                f"  run {i + 1}/{runs}: bare {bare[-1]:.2f} s, bare with checkout.workers={workers} "
                f"{parallel[-1]:.2f} s, handoff {handoff[-1]:.2f} s"
            )
    finally:
        await client.close()
        await asyncio.to_thread(daemons.stop, state)  # before its state folder or worktrees go

    # Breakdown: the halves in-process.
    from handoff.agent import gitops

    snap, add = [], []
    for i in range(max(1, sizes.handoff_runs)):
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
    reset_repo(repo)
    if scratch is not None:
        shutil.copy(base / "server.stderr", fresh_dir(OUT / "handoff-tmpfs") / "server.stderr")
        shutil.rmtree(base, ignore_errors=True)

    b, p, h = median(bare), median(parallel), median(handoff)
    ratio = h / b
    label = f" ({scratch})" if scratch else ""
    res = {
        "files": sizes.big_files,
        "tracked_mb": tracked_size_mb(source),
        "disk_mb": du_mb(source),
        "scratch": str(scratch) if scratch else None,
        "runs": len(bare),
        "checkout_workers": workers,
        "bare_worktree_add_s": summary(bare),
        "bare_parallel_checkout_s": summary(parallel),
        "handoff_to_agent_start_s": summary(handoff),
        "delegate_answer_s": summary(answered),
        "discard_s": summary(discard),
        "ratio": ratio,
        "ratios_per_run": [x / y for x, y in zip(handoff, bare, strict=True)],
        "ratio_vs_parallel_checkout": h / p,
        "ratios_vs_parallel_checkout_per_run": [
            x / y for x, y in zip(handoff, parallel, strict=True)
        ],
        "in_process_snapshot_s": summary(snap),
        "in_process_add_worktree_s": summary(add),
        "targets": [
            {
                "metric": f"handoff cost / bare git worktree add{label}",
                "value": ratio,
                "target": "<= 1.2",
                "met": ratio <= 1.2,
            }
        ],
        "rows": [
            (f"bare `git worktree add`, {sizes.big_files} files{label}, median", f"{b:.2f} s"),
            (
                f"bare git with parallel checkout (checkout.workers={workers}){label}, median",
                f"{p:.2f} s",
            ),
            (f"delegate to agent start{label}, median", f"{h:.2f} s"),
            (f"  of which snapshot (in-process, median){label}", f"{median(snap):.2f} s"),
            (f"  of which gitops.add_worktree (in-process, median){label}", f"{median(add):.2f} s"),
            (
                f"handoff cost / bare git with parallel checkout{label} (informational)",
                f"{h / p:.2f}",
            ),
            (f"handoff.delegate answer{label}, median", f"{median(answered) * 1000:.0f} ms"),
            (
                f"handoff.discard of a {sizes.big_files}-file session{label}, median",
                f"{median(discard):.2f} s",
            ),
        ],
    }
    return res


def run(sizes, log, scratch: Path | None = None) -> dict[str, Any]:
    state = (scratch or OUT) / "handoff" / "state"  # base / "state" in _run
    with daemons.stopped_after(state):
        return asyncio.run(_run(sizes, log, scratch))
