"""What-if runs: ``handoff-lsp`` with a change applied as a monkeypatch, so a benchmark can measure a
change (or trace the server) before anyone edits ``agent/`` or ``server/``. Nothing here is used
by a normal run.

    BENCH_PATCHES=trace-latency BENCH_TRACE_CLIENT=/tmp/client.txt python -m bench --only latency

The benchmarks then start ``python -m bench.whatif_server --patches ...`` instead of
``handoff-lsp``; the table's header says "WHAT-IF RUN". The patch left is a trace for diagnosis:

- ``trace-latency``: logs, for every codeAction and executeCommand, ``tl`` and the clock
  (``perf_counter_ns``, CLOCK_MONOTONIC, the same clock in every process) when its header was
  read, when it was handled and when its answer was written, then the main thread's time on the
  CPU, its time waiting on a run queue and its number of runs in between
  (``/proc/thread-self/schedstat``). With ``BENCH_TRACE_CLIENT=FILE`` the latency benchmark
  writes its own send/receive clock per request (a ``#`` line starts each condition: warm-up,
  idle, ramp, loaded, ready), so a slow request can be split into client, wake-up and server.

A patch is deleted once its change has landed or been given up (the history has them): a patch
of private internals that nothing runs only breaks when the code moves. Measured this way and
landed since: asyncio's pipe reader for stdin (``server/cli.py``), built-in agents in one agent
host process (``agent/host.py``), agents at a lower CPU priority (``agent/processes.py``), litellm
off the event loop, a capacity limiter for snapshots, ``checkout.workers`` in
``gitops.add_worktree``, ``gitops.read_blobs`` for the merge plan, and a shallow
``Session.to_wire``; given up: ``split-worktree-add`` (checkouts outside the manager's git lock:
no gain in throughput, bench/RESULTS.md); spent: ``trace-delegate`` and ``trace-handoff``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

PATCHES = ("trace-latency",)


def from_env() -> list[str]:
    names = [p.strip() for p in os.environ.get("BENCH_PATCHES", "").split(",") if p.strip()]
    unknown = [n for n in names if n not in PATCHES]
    if unknown:
        raise SystemExit(f"BENCH_PATCHES: unknown patch(es) {unknown}; known: {', '.join(PATCHES)}")
    return names


def server_argv(names: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "bench.whatif_server", "--patches", ",".join(names), "--"]


def _trace_latency() -> None:
    import logging
    import time

    from handoff.server import cli
    from pygls.protocol import JsonRPCProtocol

    log = logging.getLogger("handoff.bench.trace")
    readline = cli._PipeReader.readline
    last = [0]

    async def traced_readline(self):
        line = await readline(self)
        if line.startswith(b"Content-Length"):
            last[0] = time.perf_counter_ns()
        return line

    cli._PipeReader.readline = traced_readline
    handle, send = JsonRPCProtocol.handle_message, JsonRPCProtocol._send_data
    seen: dict[Any, tuple[int, int]] = {}

    def schedstat() -> str:
        with open("/proc/thread-self/schedstat") as f:
            return f.read().split()

    def handle_message(self, message):
        if getattr(message, "method", None) in (
            "workspace/executeCommand",
            "textDocument/codeAction",
        ):
            seen[message.id] = (last[0], time.perf_counter_ns(), schedstat())
        return handle(self, message)

    def _send_data(self, data):
        result = send(self, data)
        mid = getattr(data, "id", None)
        if mid in seen:
            t_hdr, t_handle, s0 = seen.pop(mid)
            s1 = schedstat()
            log.warning(
                "tl %d %d %d %d %d %d",
                t_hdr,
                t_handle,
                time.perf_counter_ns(),
                int(s1[0]) - int(s0[0]),
                int(s1[1]) - int(s0[1]),
                int(s1[2]) - int(s0[2]),
            )
        return result

    JsonRPCProtocol.handle_message = handle_message
    JsonRPCProtocol._send_data = _send_data


_APPLY = {"trace-latency": _trace_latency}


_applied: set[str] = set()


def apply(names: Sequence[str]) -> None:
    for name in names:
        if name not in _applied:
            _APPLY[name]()
            _applied.add(name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patches", default="")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    apply([n for n in args.patches.split(",") if n])
    from handoff.server.cli import main as server_main

    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    return server_main(rest)


if __name__ == "__main__":
    sys.exit(main())
