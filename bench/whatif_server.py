"""What-if runs: ``handoff-lsp`` with a proposed change applied as a monkeypatch, so a benchmark can
measure a change before anyone edits ``agent/`` or ``server/``. Nothing here is used by a normal run.

    BENCH_PATCHES=split-worktree-add python -m bench --only handoff,scale

The benchmarks then start ``python -m bench.whatif_server --patches ...`` instead of ``handoff-lsp``;
that server starts its session daemon the same way (``python -m bench.whatif_server --patches ...
--run handoff.agent.daemon -- --state-dir ...``), so a patch of the agent side (git, the session
manager) acts where the sessions now live. The benchmarks apply the same patches to what they call
in-process (``gitops.snapshot``/``add_worktree`` in
the handoff benchmark, the merge plan in the apply benchmark); the table's header says "WHAT-IF
RUN". A patch is the proposed code itself, or a trace for diagnosis:

- ``split-worktree-add``: ``gitops.add_worktree`` creates the worktree with ``--no-checkout`` (the
  part that touches shared admin files: ~10 ms) under the manager's lock, then fills it with
  ``git -c checkout.workers=<cpus> reset --hard`` (what ``worktree add`` runs itself) outside the
  lock, so sessions check out in parallel instead of one after another.
- ``trace-delegate``: logs (to the server's stderr) where a ``workspace/executeCommand`` request
  spends its time: the request as a whole, the write of its answer, ``Repos.for_uri``,
  ``Repos.overlays``, ``Settings.config_for`` and ``delegation.delegate``.
- ``trace-handoff``: logs (to the daemon's log, ``<state>/daemon/daemon.log``) the steps from
  ``SessionManager.delegate`` to the agent's start: every git call, the snapshot, the blob reads,
  ``add_worktree``, the session record and brief.
- ``trace-latency``: logs, for every codeAction and executeCommand, ``tl`` and the clock
  (``perf_counter_ns``, CLOCK_MONOTONIC, the same clock in every process) when its header was
  read, when it was handled and when its answer was written, then the main thread's time on the
  CPU, its time waiting on a run queue and its number of runs in between
  (``/proc/thread-self/schedstat``). With ``BENCH_TRACE_CLIENT=FILE`` the latency benchmark
  writes its own send/receive clock per request (a ``#`` line starts each condition: warm-up,
  idle, ramp, loaded, ready), so a slow request can be split into client, wake-up and server.

Changes measured this way that have landed since (and whose patches are gone): asyncio's pipe
reader for stdin (``server/cli.py``), built-in agents in one agent host process
(``agent/host.py``), agents at a lower CPU priority (``agent/processes.py``), litellm off the event
loop, a capacity limiter for snapshots, ``checkout.workers`` in ``gitops.add_worktree``,
``gitops.read_blobs`` for the merge plan, and a shallow ``Session.to_wire``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PATCHES = ("split-worktree-add", "trace-delegate", "trace-handoff", "trace-latency")
AGENT_SIDE = ("split-worktree-add", "trace-handoff")  # the rest patch the LSP front


def from_env() -> list[str]:
    names = [p.strip() for p in os.environ.get("BENCH_PATCHES", "").split(",") if p.strip()]
    unknown = [n for n in names if n not in PATCHES]
    if unknown:
        raise SystemExit(f"BENCH_PATCHES: unknown patch(es) {unknown}; known: {', '.join(PATCHES)}")
    return names


def server_argv(names: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "bench.whatif_server", "--patches", ",".join(names), "--"]


def _patched_daemons(names: Sequence[str]) -> None:
    """The server starts its daemon with the same patches (``--run handoff.agent.daemon`` keeps
    that name in its command line, which ``stop_daemon`` and bench/daemons.py look for)."""
    import subprocess

    from handoff.agent import client

    root_dir = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root_dir, os.environ.get("PYTHONPATH")) if p)

    def start_daemon(root: Path) -> None:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "bench.whatif_server", "--patches", ",".join(names), "--run",
                 "handoff.agent.daemon", "--", "--state-dir", str(root), "--detach"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True, cwd="/", timeout=client.START_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise client.DaemonUnavailable(f"the what-if daemon could not be started: {exc}") from None
        if proc.returncode != 0:
            raise client.DaemonUnavailable(proc.stderr.decode("utf-8", "replace").strip()[-300:]
                                           or f"the what-if daemon exited {proc.returncode}")

    client.start_daemon = start_daemon


# -- split-worktree-add ---------------------------------------------------------------------------


def _split_worktree_add() -> None:
    import contextlib
    import threading

    from handoff.agent import gitops
    from handoff.agent.manager import SessionManager

    admin = threading.Lock()  # stands for the manager's _git_lock, now held for admin steps only
    workers = str(os.cpu_count() or 2)

    def add_worktree(repo_root, path, *, branch, commit) -> None:
        if gitops._branch_exists(repo_root, branch):
            raise gitops.GitError(f"branch {branch} exists already in {repo_root}")
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise gitops.GitError(f"worktree folder exists already and is not empty: {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with admin:
            gitops._run(repo_root, *gitops._NO_HOOKS, "worktree", "add", "--quiet", "--no-checkout",
                        "-b", branch, str(path), commit)
        gitops._run(path, *gitops._NO_HOOKS, "-c", f"checkout.workers={workers}", "reset", "--hard",
                    "--quiet", "--no-recurse-submodules")

    original_init, original_cleanup = SessionManager.__init__, SessionManager._cleanup

    def __init__(self, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)
        self._git_lock = contextlib.nullcontext()  # add() no longer serialises whole checkouts

    def _cleanup(self, s) -> None:
        with admin:
            original_cleanup(self, s)

    gitops.add_worktree = add_worktree
    SessionManager.__init__ = __init__
    SessionManager._cleanup = _cleanup


# -- trace-delegate (diagnosis only: logs where a delegate request spends its time) ----------------


def _trace_delegate() -> None:
    import logging
    import time

    from handoff.server import delegation, repos, settings

    log = logging.getLogger("handoff.bench.trace")

    def timed(owner, name):
        original = getattr(owner, name)

        async def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                log.warning("trace %s %.1f ms", name, (time.perf_counter() - t0) * 1000)

        setattr(owner, name, wrapper)

    from pygls.protocol import JsonRPCProtocol

    handle, send = JsonRPCProtocol.handle_message, JsonRPCProtocol._send_data
    seen: dict[Any, float] = {}

    def handle_message(self, message):
        if getattr(message, "method", None) == "workspace/executeCommand":
            seen[message.id] = time.perf_counter()
        return handle(self, message)

    def _send_data(self, data):
        t0 = time.perf_counter()
        result = send(self, data)
        mid = getattr(data, "id", None)
        if mid in seen:
            log.warning("trace request %.1f ms (write %.1f ms)", (time.perf_counter() - seen.pop(mid)) * 1000,
                        (time.perf_counter() - t0) * 1000)
        return result

    JsonRPCProtocol.handle_message = handle_message
    JsonRPCProtocol._send_data = _send_data
    timed(repos.Repos, "for_uri")
    timed(repos.Repos, "overlays")
    timed(settings.Settings, "config_for")
    timed(delegation, "delegate")


# -- trace-handoff (diagnosis only: logs the steps from delegate to agent start) -----------------


def _trace_handoff() -> None:
    import logging
    import time

    from handoff.agent import gitops, manager, store
    from handoff.agent.backends import command

    log = logging.getLogger("handoff.bench.trace")

    def timed_sync(owner, name):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                log.warning("trace %s %.1f ms", name, (time.perf_counter() - t0) * 1000)

        setattr(owner, name, wrapper)

    for name in ("snapshot", "read_blob", "read_blobs", "add_worktree", "_run"):
        timed_sync(gitops, name)
    timed_sync(store.Store, "save")
    timed_sync(store.Store, "write_brief")
    timed_sync(manager.SessionManager, "_prepare")
    timed_sync(command.CommandBackend, "_env")
    original_delegate = manager.SessionManager.delegate

    def delegate(self, req):
        log.warning("trace delegate-called")
        return original_delegate(self, req)

    manager.SessionManager.delegate = delegate
    original_started = manager.SessionManager._agent_started

    def _agent_started(self, s, pid):
        log.warning("trace agent-started")
        return original_started(self, s, pid)

    manager.SessionManager._agent_started = _agent_started


def _trace_latency() -> None:
    import logging
    import time

    from pygls.protocol import JsonRPCProtocol

    from handoff.server import cli

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
        if getattr(message, "method", None) in ("workspace/executeCommand", "textDocument/codeAction"):
            seen[message.id] = (last[0], time.perf_counter_ns(), schedstat())
        return handle(self, message)

    def _send_data(self, data):
        result = send(self, data)
        mid = getattr(data, "id", None)
        if mid in seen:
            t_hdr, t_handle, s0 = seen.pop(mid)
            s1 = schedstat()
            log.warning("tl %d %d %d %d %d %d", t_hdr, t_handle, time.perf_counter_ns(),
                        int(s1[0]) - int(s0[0]), int(s1[1]) - int(s0[1]), int(s1[2]) - int(s0[2]))
        return result

    JsonRPCProtocol.handle_message = handle_message
    JsonRPCProtocol._send_data = _send_data


_APPLY = {"split-worktree-add": _split_worktree_add, "trace-delegate": _trace_delegate,
          "trace-handoff": _trace_handoff, "trace-latency": _trace_latency}


_applied: set[str] = set()


def apply(names: Sequence[str]) -> None:
    for name in names:
        if name not in _applied:
            _APPLY[name]()
            _applied.add(name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patches", default="")
    p.add_argument("--run", choices=["handoff.server.cli", "handoff.agent.daemon"], default="handoff.server.cli",
                   help="the program to run patched: the server (default) or the session daemon")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    names = [n for n in args.patches.split(",") if n]
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if args.run == "handoff.agent.daemon":
        from handoff.agent.daemon import main as daemon_main

        apply([n for n in names if n in AGENT_SIDE])
        return daemon_main(rest)
    apply(names)
    _patched_daemons(names)
    from handoff.server.cli import main as server_main

    return server_main(rest)


if __name__ == "__main__":
    sys.exit(main())
