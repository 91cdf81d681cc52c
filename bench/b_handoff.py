"""3. Handoff cost: ``handoff.delegate`` to the agent's first instruction, against git's own checkout.

The repositories: 20,000 and 100,000 generated files (~4 KB each; ``BENCH_HANDOFF_FILES`` picks
others), packed, with uncommitted work (20 modified tracked files, a staged change, 10 untracked
files) and, in the editor, one open buffer with unsaved changes. The agent is ``/bin/sh`` writing
``date +%s%N`` (wall clock, ns) to a file first thing: the time from sending the delegate request
to that stamp covers the LSP round trip, the server's ``delegate`` request to the session daemon
(with the unsaved buffer), the snapshot (a copy of the daemon's kept split index,
agent/keptindex.py, + ``add -A`` + overlays + ``write-tree``/``commit-tree``), the brief, the
session's worktree and the agent's process start.

Four things, interleaved (the order rotates every run; before each, the warm daemon's pool
refilled, a ``sync``, and a wait until the disk has written and trimmed nothing for a second
(``common.quiet_disk``: on an ext4 mounted with ``discard`` the trims of the last removal go on
after ``sync``), and on a disk, a minute since the last removal of many files (the last run's
folders, the last size's sessions: ext4 passes over inodes freed in the last minute when it
allocates new ones), so no background work lands on a measurement):

- **serial**: ``git worktree add -b <branch> <path> HEAD``, git's default;
- **best**: ``git -c checkout.workers=<cores> worktree add ...``, git's parallel checkout, the
  baseline the targets are against;
- **cold**: the handoff with ``pool.size = 0``: a ``git worktree add`` of HEAD (the same parallel
  checkout) started while the snapshot is taken, then moved to the snapshot (only the files that
  differ written), its own daemon;
- **warm**: the handoff with the warm pool (``pool.size = 2``, ready): an idle worktree, which
  its watch says nothing wrote in since it was made (else made pristine while the snapshot is
  taken), moved to the snapshot the same way (agent/pool.py), its own daemon.

Then, for the breakdown (while the daemons are idle, before the sessions are discarded: on a disk
their deletions would land on these checkouts), the pieces called in-process (``gitops.snapshot``
from a copy of the developer's index and from a copy of a kept split one,
``gitops.add_worktree``, ``Pool.take``: move + checkout of the difference + the pristine
check), and what the daemon does now for a session that can start at once: ``Pool.early`` (a checkout of
HEAD, or a pooled worktree: taken as it is when its watch saw nothing written in it, else
checked once the snapshot has walked the developer's tree) while
``gitops.take_snapshot`` runs, moved into place and to the snapshot in its own thread as soon as
the commit is made (``Pool.aim``: move, checkout of the files that differ, branch), while the
snapshot's ref and reads are written: its total, and what it costs after the slower of the two.
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
    on_disk,
    quiet_disk,
    reset_repo,
    server_env,
    summary,
    tracked_size_mb,
)
from .lsp import BenchClient, handoff_argv


def _bare_add(repo: Path, path: Path, branch: str, commit: str, *extra: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        ["git", *extra, "worktree", "add", "--quiet", "-b", branch, str(path), commit],
        cwd=repo,
        check=True,
        env={**os.environ, **GIT_ENV},
    )
    return time.perf_counter() - t0


RECENTLY_DELETED_S = 61.0  # ext4's `recently_deleted`: 60 s since the inode was freed (synced)


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
    removed_at = time.monotonic()  # the last run's folders (and the last size's) went just now
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
    # On a disk, nothing is removed until every measurement of this size is taken: ext4 skips
    # the inodes of files deleted in the last minute (five when their inode table is not written
    # yet) when it allocates new ones, at a cost in system time that grows with how many were deleted
    # (`recently_deleted` in ext4's inode allocator: a checkout of 20,000 files took 0.75 s on
    # this disk before any removal and 5-6 s, 8 s of it in the kernel, right after one). The
    # order of the kinds rotates, but which kind pays for which removal would be chance.
    leftovers: list[tuple[Path, str]] = []  # baseline worktrees (path, branch)
    ended: dict[str, list[str]] = {"cold": [], "warm": []}  # sessions to discard at the end
    defer = on_disk(base)  # on tmpfs, everything goes at once (no such cost; RAM is the limit)

    def remove_worktrees() -> None:
        for path, branch in leftovers:
            _remove(repo, path, branch)
        leftovers.clear()

    async def discard_sessions() -> None:
        for kind, sids in ended.items():
            for sid in sids:
                t = time.perf_counter()
                await clients[kind].command("handoff.discard", {"sessionId": sid})
                discard.append(time.perf_counter() - t)
            sids.clear()

    def breakdown() -> tuple[list[Any], ...]:
        # The pieces in-process, while the daemons are idle and before any session is
        # discarded (on a disk, those deletions would land on these checkouts).
        from handoff.agent import gitops
        from handoff.agent.keptindex import KeptIndex
        from handoff.agent.pool import Pool

        snap, snap_kept, add, take, cold_p, warm_p = [], [], [], [], [], []
        pool = Pool(repo, base / "parts" / "pool", threading.Lock())
        kept = KeptIndex(repo, base / "parts" / "index")  # as the daemon keeps one
        kept.refresh_soon()
        if not kept.settle():
            raise RuntimeError("no kept index was made")
        overlay = {"pkg00/mod0/file00000.py": b"unsaved\n"}
        for i in range(max(1, min(runs, 2))):
            quiet_disk(base)
            t0 = time.perf_counter()
            commit = gitops.snapshot(repo, ref=f"refs/handoff/bench{i}/base", overlays=overlay)
            snap.append(time.perf_counter() - t0)
            quiet_disk(base)
            t0 = time.perf_counter()
            with kept.use() as start:
                assert start is not None
                again = gitops.take_snapshot(
                    repo, ref=f"refs/handoff/bench{i}/kept", overlays=overlay, start=start
                ).commit
            snap_kept.append(time.perf_counter() - t0)
            if git(repo, "rev-parse", f"{again}^{{tree}}") != git(
                repo, "rev-parse", f"{commit}^{{tree}}"
            ):
                raise RuntimeError("the snapshot from the kept index is another tree")
            wt = base / "parts" / f"add{i}"
            leftovers.append((wt, f"bench/part-{i}"))
            quiet_disk(base)
            t0 = time.perf_counter()
            gitops.add_worktree(repo, wt, branch=f"bench/part-{i}", commit=commit)
            add.append(time.perf_counter() - t0)
            if not defer:
                remove_worktrees()
            pool._size = 1
            pool._fill()
            wt = base / "parts" / f"take{i}"
            leftovers.append((wt, f"bench/take-{i}"))
            quiet_disk(base)
            t0 = time.perf_counter()
            assert pool.take(wt, branch=f"bench/take-{i}", commit=commit)
            take.append(time.perf_counter() - t0)
            if not defer:
                remove_worktrees()
            # what the daemon does now: the worktree readied while the snapshot is taken
            for kind, parts in (("cold", cold_p), ("warm", warm_p)):
                if kind == "warm":
                    pool._fill()
                wt = base / "parts" / f"{kind}{i}"
                leftovers.append((wt, f"bench/{kind}-{i}"))
                quiet_disk(base)
                t0 = time.perf_counter()
                early = pool.early(use_pool=kind == "warm")
                branch = f"bench/{kind}-{i}"
                with kept.use() as start:
                    c = gitops.take_snapshot(
                        repo,
                        ref=f"refs/handoff/bench{kind}{i}/base",
                        overlays=overlay,
                        added=early.go.set,
                        committed=lambda c, e=early, w=wt, b=branch: pool.aim(
                            e, w, branch=b, commit=c
                        ),
                        start=start,
                    ).commit
                t_snap = time.perf_counter() - t0
                assert pool.take_early(early, wt, branch=branch, commit=c)
                total = time.perf_counter() - t0
                parts.append(
                    {
                        "total_s": total,
                        "snapshot_s": t_snap,
                        "ready_s": early.done - early.started,
                        "after_ready_s": total - max(t_snap, early.done - early.started),
                    }
                )
                if not defer:
                    remove_worktrees()
        remove_worktrees()
        pool.clear()
        kept.close()
        return snap, snap_kept, add, take, cold_p, warm_p

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
            ended[kind].append(sid)
            return (started - t0) / 1e9, (t_answer - t0) / 1e9

        def baseline(kind: str, i: int) -> float:
            path = base / kind / f"wt{i}"
            extra = ("-c", f"checkout.workers={workers}") if kind == "best" else ()
            leftovers.append((path, f"bench/{kind}-{i}"))
            return _bare_add(repo, path, f"bench/{kind}-{i}", head, *extra)

        async def settle() -> None:
            await _wait_pool(states["warm"], 2)  # no refill runs under a measurement
            quiet_disk(base)
            # ext4 passes over the inodes freed in the last minute (once synced) when it
            # allocates new ones: a checkout of 20,000 files right after removing 40,000 took
            # 0.93 s against 0.71-0.77 s
            wait = RECENTLY_DELETED_S - (time.monotonic() - removed_at)
            if defer and not sizes.quick and wait > 0:
                log(
                    f"  waiting {wait:.0f} s: files were removed on this disk less than a minute ago"
                )
                await asyncio.sleep(wait)

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
                if not defer:
                    remove_worktrees()
                    await discard_sessions()
            log(
                f"  {n_files} files, run {i + 1}/{runs}: "
                + ", ".join(f"{k} {times[k][-1]:.2f} s" for k in kinds)
            )
        pool_mb = sum(
            json.loads(r.read_text()).get("bytes", 0)
            for r in states["warm"].glob("repos/*/pool/p-*.json")
        ) / (1 << 20)
        snap, snap_kept, add, take, cold_p, warm_p = await asyncio.to_thread(breakdown)
        await discard_sessions()
    finally:
        for client in clients.values():
            await client.close()
        for state in states.values():  # before their state folders or worktrees go
            await asyncio.to_thread(daemons.stop, state)

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
        "in_process_snapshot_kept_s": summary(snap_kept),
        "in_process_add_worktree_s": summary(add),
        "in_process_pool_take_s": summary(take),
        "in_process_early_cold": cold_p,
        "in_process_early_warm": warm_p,
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
            (
                f"  snapshot (in-process, median): from a copy of the index / the kept split "
                f"index, {label}",
                f"{median(snap) * 1000:.0f} / {median(snap_kept) * 1000:.0f} ms",
            ),
            (f"  gitops.add_worktree (in-process, median), {label}", f"{median(add):.3f} s"),
            (
                f"  Pool.take: move + checkout + clean (in-process, median), {label}",
                f"{median(take) * 1000:.0f} ms",
            ),
            (
                f"  early cold (checkout of HEAD beside the snapshot, then branched), {label}",
                _early_row(cold_p),
            ),
            (
                f"  early warm (pooled worktree readied beside the snapshot), {label}",
                _early_row(warm_p),
            ),
            (f"  pool disk use (2 idle worktrees), {label}", f"{pool_mb:.0f} MB"),
            (
                f"handoff.delegate answer cold / warm, {label}, median",
                f"{median(answered['cold']) * 1000:.0f} / {median(answered['warm']) * 1000:.0f} ms",
            ),
            (f"handoff.discard of a session, {label}, median", f"{median(discard):.2f} s"),
        ],
    }


def _early_row(parts: list[dict[str, float]]) -> str:
    """median total = max(snapshot, readying) + the rest (move, read-tree, branch)."""
    if not parts:
        return "-"
    med = {k: median([p[k] for p in parts]) for k in parts[0]}
    return (
        f"{med['total_s']:.3f} s (snapshot {med['snapshot_s']:.3f}, readying "
        f"{med['ready_s']:.3f}, then {med['after_ready_s'] * 1000:.0f} ms)"
    )


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
