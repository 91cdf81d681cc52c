"""6. The session daemon: how fast its events reach the editor, and ``handoff ls`` as a user types it.

One server (``handoff-lsp``, which starts the daemon of the benchmark's state folder) on a
repository with ``daemon_sessions`` ready sessions of a command agent that appends the time to a
file (so every run changes the result). In the benchmark process, beside the editor's client
(:class:`~bench.lsp.BenchClient`, LSP over stdio), a second client of the same daemon
(:class:`handoff.agent.client.DaemonClient`, what the CLI uses) opens the same repository
(``openRepo``), so both get the daemon's events.

- **Event -> editor.** The daemon client sends ``followUp`` for one ready session after another.
  Each follow-up makes the daemon announce the session ``queued`` (then ``running``, then
  ``ready`` with one more run). t0: the daemon client receives the ``session`` notification;
  t1: the editor's client receives the ``handoff/sessions`` list that shows it (the path is the
  daemon's socket, the server's mirror, its coalesced list, the LSP pipe). Timed for two events
  of each follow-up: the first (``queued``: the server has sent no list for a while, so nothing
  holds it back) and the last (``ready``: it follows the ``running`` list within the server's
  100 ms coalescing interval, so it may wait up to that long, by design). Between follow-ups
  the benchmark waits until no list came for 0.25 s. Both clients are in the same process and
  the same event loop, so t1 - t0 is one clock; t0 is taken as the daemon client reads the line,
  t1 as the editor's client hands the list to its handler (both get their bytes as the loop
  wakes, so a sample can be a fraction of a millisecond below zero: the server's hop was faster
  than the bench's own reading).
- **`handoff ls`** wall time (process start to exit, ``subprocess`` timing, hyperfine-style:
  one untimed run, then ``ls_warm_runs``): warm, with the daemon running and the repository
  loaded; cold, with no daemon (``ls_cold_runs``, each after ``handoff daemon stop``): it starts
  one (detached) and waits for it, which loads the repository. Informational floor: ``handoff
  --version`` (the interpreter and the CLI's imports, no daemon).
- The daemon's RSS with ``daemon_sessions`` ready sessions (64 of them: the scale benchmark).

The one target: every timed event reached the editor's list. The latencies have none in the issue;
they are reported.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

from . import agents, daemons
from .common import (
    OUT,
    VENV_BIN,
    fresh_dir,
    generated_repo,
    pct,
    reset_repo,
    rss_mb,
    server_env,
    summary,
)
from .lsp import BenchClient, count_states, handoff_argv

QUIET_S = 0.25  # no handoff/sessions list for this long: the server's coalescing interval is 0.1 s
EVENT_TIMEOUT_S = 120.0


async def _quiet(client: BenchClient) -> None:
    """Until no ``handoff/sessions`` list has come for ``QUIET_S`` (so the next change is sent at
    once, not held back by the server's coalescing)."""
    assert client.list_log is not None
    while True:
        seen = len(client.list_log)
        await asyncio.sleep(QUIET_S)
        if len(client.list_log) == seen:
            return


def _find(sessions: list[dict[str, Any]], sid: str) -> dict[str, Any] | None:
    return next((s for s in sessions if s["id"] == sid), None)


def _first(items: list[tuple[float, Any]], pred) -> float | None:
    return next((t for t, item in items if pred(item)), None)


async def _events(
    sizes,
    log,
    client: BenchClient,
    state: Path,
    repo: Path,
    ids: list[str],
    request: dict[str, Any],
) -> dict[str, Any]:
    from handoff.agent import protocol
    from handoff.agent.client import DaemonClient

    notes: list[tuple[float, dict[str, Any]]] = []
    dc = DaemonClient(state, name="bench")
    await dc.connect(start=False)  # the server's daemon
    conn = dc.conn
    assert conn is not None
    received = conn._received

    def timed(message: dict[str, Any]) -> None:
        """t0 as the line is read (the client hands notifications to a task of their own, which
        runs after whatever else this event loop has ready, the editor's list included)."""
        if message.get("method") == protocol.SESSION:
            notes.append((time.perf_counter(), (message.get("params") or {}).get("session") or {}))
        received(message)

    conn._received = timed  # type: ignore[method-assign]
    first_ms: list[float] = []
    ready_ms: list[float] = []
    round_ms: list[float] = []
    reached = 0
    warm = 1 if sizes.quick else 3
    client.list_log = []
    try:
        opened = await dc.call(protocol.OPEN_REPO, {"path": str(repo)})
        if not set(ids) <= {s["id"] for s in opened["sessions"]}:
            raise RuntimeError("the daemon client's openRepo lists other sessions than the editor")
        for i in range(warm + sizes.daemon_events):
            sid = ids[i % len(ids)]
            await _quiet(client)
            before = _find(client.sessions, sid)
            if before is None or before["state"] != "ready":
                raise RuntimeError(f"session {sid} is not ready before its follow-up: {before}")
            runs = before["runs"]
            n0, l0 = len(notes), len(client.list_log)
            t_sent = time.perf_counter()
            await dc.call(
                protocol.FOLLOW_UP, {"sessionId": sid, "instruction": f"follow-up {i}", **request}
            )

            def done(s: dict[str, Any] | None, runs: int = runs) -> bool:
                return (
                    s is not None
                    and s["runs"] == runs + 1
                    and s["state"] not in ("queued", "running")
                )

            deadline = time.monotonic() + EVENT_TIMEOUT_S
            while not (
                any(done(_find(ss, sid)) for _, ss in client.list_log[l0:])
                and any(w["id"] == sid and done(w) for _, w in notes[n0:])
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"follow-up {i} of {sid}: not finished in the editor's list after "
                        f"{EVENT_TIMEOUT_S:g} s"
                    )
                waiter = client.changed
                try:
                    await asyncio.wait_for(
                        waiter.wait(), 0.05
                    )  # lists wake us; notifications are polled
                except asyncio.TimeoutError:
                    pass
            mine = [(t, w) for t, w in notes[n0:] if w["id"] == sid]
            lists = client.list_log[l0:]
            final = next(w for _, w in mine if done(w))
            if final["state"] != "ready":
                raise RuntimeError(
                    f"follow-up {i} of {sid} ended {final['state']}: {final.get('error')}"
                )
            # The first change: the first notification after the request; the first list in which
            # the session is no longer (ready, runs).
            t0_first = mine[0][0]
            t1_first = _first(
                lists,
                lambda ss, sid=sid, runs=runs: (
                    (s := _find(ss, sid)) is not None and (s["state"], s["runs"]) != ("ready", runs)
                ),
            )
            t0_ready = _first(
                mine, lambda w, runs=runs: w["state"] == "ready" and w["runs"] == runs + 1
            )
            t1_ready = _first(
                lists,
                lambda ss, sid=sid, runs=runs: (
                    (s := _find(ss, sid)) is not None
                    and s["state"] == "ready"
                    and s["runs"] == runs + 1
                ),
            )
            if None in (t1_first, t0_ready, t1_ready):
                raise RuntimeError(f"follow-up {i} of {sid}: an event did not reach the editor")
            if i >= warm:
                reached += 1
                first_ms.append((t1_first - t0_first) * 1000)
                ready_ms.append((t1_ready - t0_ready) * 1000)
                round_ms.append((t1_ready - t_sent) * 1000)
        log(
            f"  {sizes.daemon_events} follow-ups: first change p50 {pct(first_ms, 50):.1f} ms, "
            f"ready p50 {pct(ready_ms, 50):.1f} ms"
        )
    finally:
        client.list_log = None
        await dc.close()
    return {"first_ms": first_ms, "ready_ms": ready_ms, "round_ms": round_ms, "reached": reached}


def _time(argv: list[str], *, cwd: Path, env: dict[str, str], expect: list[str]) -> float:
    """Wall time of one run of ``argv`` (start to exit); it must succeed and print ``expect``."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or any(e not in proc.stdout for e in expect):
        raise RuntimeError(
            f"{' '.join(argv[-2:])} exited {proc.returncode}: {proc.stdout[-500:]} {proc.stderr[-500:]}"
        )
    return elapsed


async def _run(sizes, log, work: Path) -> dict[str, Any]:
    state = work / "state"
    repo = generated_repo(sizes.medium_files, log=log)
    env = server_env(state)
    k = sizes.daemon_sessions
    init = {"agent": "bump", "agents": {"bump": {"command": agents.bump()}}, "maxParallel": 8}
    request = {"env": env, "overrides": [["bench", init]]}  # what an editor's request carries
    handoff = str(VENV_BIN / "handoff")
    client = BenchClient()
    try:
        await client.start(handoff_argv(), env=env, stderr_path=work / "server.stderr")
        await client.initialize(repo, init)
        await client.list_sessions()
        uri = client.open(repo / "pkg00/mod0/file00000.py")
        ids = []
        for i in range(k):
            r = await client.command(
                "handoff.delegate",
                {
                    "uri": uri,
                    "range": {
                        "start": {"line": i % 40, "character": 0},
                        "end": {"line": i % 40, "character": 3},
                    },
                    "instruction": f"daemon benchmark session {i}",
                },
            )
            ids.append(r["sessionId"])
        await client.wait_sessions(
            lambda ss: sum(1 for s in ss if s["id"] in ids and s["state"] == "ready") == k,
            60 + 5 * k,
            f"{k} sessions ready",
        )
        log(f"  {k} sessions ready; timing daemon events to the editor...")
        ev = await _events(sizes, log, client, state, repo, ids, request)
        states = count_states([s for s in await client.list_sessions() if s["id"] in ids])
        daemon_rss = daemons.daemon_rss(state)
        server_rss = rss_mb(client.proc.pid)
        if daemon_rss is None:
            raise RuntimeError("the session daemon is not running")

        log(f"  `handoff ls` warm ({sizes.ls_warm_runs} runs)...")
        runs = max(1, sizes.ls_warm_runs)
        _time([handoff, "ls"], cwd=repo, env=env, expect=ids)  # untimed: page cache, .pyc files
        version = [_time([handoff, "--version"], cwd=repo, env=env, expect=[]) for _ in range(runs)]
        warm = [_time([handoff, "ls"], cwd=repo, env=env, expect=ids) for _ in range(runs)]
    finally:
        await client.close()
        await asyncio.to_thread(daemons.stop, state)

    log(f"  `handoff ls` cold ({sizes.ls_cold_runs} runs, each starting the daemon)...")
    cold = []
    for _ in range(max(1, sizes.ls_cold_runs)):
        if daemons.daemon_pid(state) is not None:
            raise RuntimeError("a daemon still runs before a cold `handoff ls`")
        cold.append(await asyncio.to_thread(_time, [handoff, "ls"], cwd=repo, env=env, expect=ids))
        if daemons.daemon_pid(state) is None:
            raise RuntimeError("`handoff ls` started no daemon")
        await asyncio.to_thread(daemons.stop, state)
    reset_repo(repo)

    n = sizes.daemon_events
    f, r = ev["first_ms"], ev["ready_ms"]
    return {
        "sessions": k,
        "events": n,
        "states": states,
        "event_first_change_ms": summary(f),
        "event_ready_ms": summary(r),
        "follow_up_round_trip_ms": summary(ev["round_ms"]),
        "daemon_rss_mb": daemon_rss,
        "server_rss_mb": server_rss,
        "ls_warm_s": summary(warm),
        "ls_cold_s": summary(cold),
        "version_s": summary(version),
        "targets": [
            {
                "metric": f"every daemon event reached the editor's handoff/sessions ({n} follow-ups)",
                "value": f"{ev['reached']}/{n}",
                "target": f"{n}/{n}",
                "met": ev["reached"] == n,
            },
        ],
        "rows": [
            (
                f"daemon event -> handoff/sessions at the editor, first change (queued), p50 / p99 ({n})",
                f"{pct(f, 50):.1f} / {pct(f, 99):.1f} ms",
            ),
            (
                "daemon event -> handoff/sessions at the editor, ready (after running: coalesced), p50 / p99",
                f"{pct(r, 50):.1f} / {pct(r, 99):.1f} ms",
            ),
            (
                "followUp sent -> editor lists it ready (quick command agent), p50 / p99",
                f"{pct(ev['round_ms'], 50):.0f} / {pct(ev['round_ms'], 99):.0f} ms",
            ),
            (
                f"`handoff ls` warm (daemon running, {k} sessions), median / p90 ({len(warm)} runs)",
                f"{pct(warm, 50) * 1000:.0f} / {pct(warm, 90) * 1000:.0f} ms",
            ),
            (
                f"`handoff ls` cold (starts the daemon), median / p90 ({len(cold)} runs)",
                f"{pct(cold, 50) * 1000:.0f} / {pct(cold, 90) * 1000:.0f} ms",
            ),
            (
                "`handoff --version` (interpreter + CLI imports, no daemon), median",
                f"{pct(version, 50) * 1000:.0f} ms",
            ),
            (
                f"daemon / server RSS with {k} ready sessions",
                f"{daemon_rss['rss_mb']:.0f} / {server_rss['rss_mb']:.0f} MB",
            ),
        ],
    }


def run(sizes, log) -> dict[str, Any]:
    work = fresh_dir(OUT / "daemon")
    with daemons.stopped_after(work / "state"):
        return asyncio.run(_run(sizes, log, work))
