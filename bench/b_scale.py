"""5. Scale: many sessions queued at once with ``maxParallel`` limiting how many run.

All ``handoff.delegate`` requests are sent at once (concurrently) for fast command agents (``sh``
writing one file). Measured: each delegate's answer time, sessions/s from the first request until
the last session is ready, the RSS (now and peak) of the server and of the session daemon (which
owns the sessions, their agents and git) with every session ready and idle, and that none is lost:
every session reaches ``ready`` with its file in ``filesChanged``, and after the server and the
daemon are both stopped, a new server (starting a new daemon, which reads the records from the
state folder) lists every one of them again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from . import agents, daemons
from .common import OUT, fresh_dir, generated_repo, pct, reset_repo, rss_mb, server_env, summary
from .lsp import BenchClient, count_states, handoff_argv


async def _run(sizes, log, base: Path) -> dict[str, Any]:
    repo = generated_repo(sizes.medium_files, log=log)
    state = base / "state"
    n, par = sizes.scale_sessions, sizes.scale_parallel
    init = {"agent": "quick", "agents": {"quick": {"command": agents.quick()}}, "maxParallel": par}
    env = server_env(state)
    client = BenchClient()
    samples: list[dict[str, float]] = []
    daemon_samples: list[dict[str, float]] = []
    try:
        await client.start(handoff_argv(), env=env, stderr_path=base / "server.stderr")
        await client.initialize(repo, init)
        await client.list_sessions()
        origin = repo / "pkg00/mod0/file00000.py"
        uri = client.open(origin)
        rss_before = rss_mb(client.proc.pid)
        first_daemon = daemons.daemon_pid(state)
        if first_daemon is None:
            raise RuntimeError("the server started no session daemon")
        daemon_before = rss_mb(first_daemon)

        async def one(i: int) -> tuple[str, float]:
            t0 = time.perf_counter()
            r = await client.command(
                "handoff.delegate",
                {
                    "uri": uri,
                    "range": {
                        "start": {"line": i % 40, "character": 0},
                        "end": {"line": i % 40, "character": 3},
                    },
                    "instruction": f"scale session {i}",
                },
            )
            return r["sessionId"], time.perf_counter() - t0

        log(f"  {n} sessions, maxParallel = {par}...")
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(n)))
        ids = {sid for sid, _ in results}
        delegate_s = [dt for _, dt in results]

        async def sample() -> None:
            while True:
                samples.append(rss_mb(client.proc.pid))
                daemon_samples.append(rss_mb(first_daemon))
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample())
        done_states = ("ready", "failed", "cancelled", "interrupted")
        try:
            await client.wait_sessions(
                lambda ss: sum(1 for s in ss if s["id"] in ids and s["state"] in done_states) >= n,
                60 + 10 * n,
                f"all {n} sessions finished",
            )
        finally:
            sampler.cancel()
        elapsed = time.perf_counter() - t0
        await asyncio.sleep(1.0)  # idle: every session ready, nothing running
        rss_idle = rss_mb(client.proc.pid)
        daemon_idle = rss_mb(first_daemon)
        listed = await client.list_sessions()
        mine = [s for s in listed if s["id"] in ids]
        ok = [s for s in mine if s["state"] == "ready" and s.get("filesChanged")]
        states = count_states(mine)
    finally:
        await client.close()

    # Nothing lost across a restart either: with the daemon stopped too (a new server alone would
    # find the same live daemon), a new server starts a new daemon, which lists all of them again.
    await asyncio.to_thread(daemons.stop, state)
    if daemons.daemon_pid(state) is not None:
        raise RuntimeError("the session daemon did not stop")
    client = BenchClient()
    try:
        await client.start(handoff_argv(), env=env, stderr_path=base / "server2.stderr")
        await client.initialize(repo, init)
        relisted = [s for s in await client.list_sessions() if s["id"] in ids]
        rss_reloaded = rss_mb(client.proc.pid)
        second_daemon = daemons.daemon_pid(state)
        if second_daemon is None or second_daemon == first_daemon:
            raise RuntimeError(f"no new session daemon after the restart (pid {second_daemon})")
        daemon_reloaded = rss_mb(second_daemon)
    finally:
        await client.close()
        await asyncio.to_thread(daemons.stop, state)
    reset_repo(repo)
    reloaded_ready = sum(1 for s in relisted if s["state"] == "ready")
    peak = max([s["peak_rss_mb"] for s in samples] + [rss_idle["peak_rss_mb"]])
    daemon_peak = max([s["peak_rss_mb"] for s in daemon_samples] + [daemon_idle["peak_rss_mb"]])
    throughput = n / elapsed
    lost = n - len(ok)
    return {
        "sessions": n,
        "max_parallel": par,
        "repo_files": sizes.medium_files,
        "elapsed_s": elapsed,
        "throughput_sessions_per_s": throughput,
        "delegate_answer_s": summary(delegate_s),
        "states": states,
        "ready_with_result": len(ok),
        "reloaded_ready": reloaded_ready,
        "rss_before_mb": rss_before,
        "rss_all_ready_mb": rss_idle,
        "peak_rss_mb": peak,
        "rss_after_restart_mb": rss_reloaded,
        "daemon_rss_before_mb": daemon_before,
        "daemon_rss_all_ready_mb": daemon_idle,
        "daemon_peak_rss_mb": daemon_peak,
        "daemon_rss_after_restart_mb": daemon_reloaded,
        "daemon_pids": [first_daemon, second_daemon],
        "targets": [
            {
                "metric": f"none lost: {n} queued sessions reach ready (and reload after restart)",
                "value": f"{len(ok)}/{n} ready, {reloaded_ready}/{n} after restart (new daemon)",
                "target": f"{n}/{n}",
                "met": lost == 0 and reloaded_ready == n,
            },
            {
                "metric": f"server RSS with {n} idle ready sessions (command agents)",
                "value": rss_idle["rss_mb"],
                "unit": "MB",
                "target": "< 300 MB",
                "met": rss_idle["rss_mb"] < 300,
            },
            {
                "metric": f"daemon RSS with {n} idle ready sessions (command agents)",
                "value": daemon_idle["rss_mb"],
                "unit": "MB",
                "target": "< 300 MB",
                "met": daemon_idle["rss_mb"] < 300,
            },
        ],
        "rows": [
            (
                f"{n} sessions, maxParallel {par}, {sizes.medium_files}-file repo: throughput",
                f"{throughput:.2f} sessions/s ({elapsed:.1f} s)",
            ),
            (
                f"handoff.delegate answer with {n} sent at once, p50 / p99",
                f"{pct(delegate_s, 50) * 1000:.0f} / {pct(delegate_s, 99) * 1000:.0f} ms",
            ),
            (
                "server RSS before / peak / all ready",
                f"{rss_before['rss_mb']:.0f} / {peak:.0f} / {rss_idle['rss_mb']:.0f} MB",
            ),
            (
                "daemon RSS before / peak / all ready",
                f"{daemon_before['rss_mb']:.0f} / {daemon_peak:.0f} / {daemon_idle['rss_mb']:.0f} MB",
            ),
            (
                f"after the restart (new server, new daemon, {n} sessions reloaded): server / daemon RSS",
                f"{rss_reloaded['rss_mb']:.0f} / {daemon_reloaded['rss_mb']:.0f} MB",
            ),
        ],
    }


def run(sizes, log) -> dict[str, Any]:
    base = fresh_dir(OUT / "scale")
    with daemons.stopped_after(base / "state"):
        return asyncio.run(_run(sizes, log, base))
