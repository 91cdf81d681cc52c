"""The session daemons the benchmarks' servers start (``handoff daemon``, one per state folder).

``handoff-lsp`` starts a detached daemon for its ``HANDOFF_STATE_DIR`` (its pid in
``<state>/daemon/daemon.pid``); it owns the sessions, the agents and the agent host (``python -m
handoff.agent.host``, the daemon's child), and it outlives the server. So every benchmark reads the
daemon's memory next to the server's, and stops the daemons it started when it ends, failed or not.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from .common import child_pid, rss_mb

AGENT_HOST = b"handoff.agent.host"  # in the agent host's command line (agent/host.py)


def daemon_pid(state_dir: Path) -> int | None:
    """The pid of the daemon of ``state_dir`` while one runs; None otherwise."""
    try:
        pid = int((state_dir / "daemon" / "daemon.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        if b"handoff.agent.daemon" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None  # a stale pid file
    except OSError:
        return None
    return pid


def daemon_rss(state_dir: Path) -> dict[str, float] | None:
    """The daemon's RSS now and at its peak (MB); None when none runs."""
    pid = daemon_pid(state_dir)
    return rss_mb(pid) if pid is not None else None


def host_rss(state_dir: Path) -> dict[str, float] | None:
    """The RSS of the agent host (the daemon's child that runs built-in agents); None when none runs."""
    pid = daemon_pid(state_dir)
    host = child_pid(pid, AGENT_HOST) if pid is not None else None
    return rss_mb(host) if host is not None else None


def stop(state_dir: Path) -> bool:
    """Stop the daemon of ``state_dir`` (blocking; it is killed if it does not stop in 15 s)."""
    from handoff.agent.client import stop_daemon

    try:
        return stop_daemon(state_dir)
    except Exception as exc:  # never hide the benchmark's own error behind this one
        print(f"bench: stopping the daemon of {state_dir} failed: {exc}", file=sys.stderr)
        return False


@contextlib.contextmanager
def stopped_after(*state_dirs: Path) -> Iterator[None]:
    """Stop the daemons of ``state_dirs`` when the block ends, also on failure."""
    try:
        yield
    finally:
        for state_dir in state_dirs:
            stop(state_dir)


def stop_all_under(folder: Path) -> list[Path]:
    """Stop every daemon whose state folder is under ``folder`` (the benchmarks' output, but not
    its cache of generated repositories); the state folders whose daemon was still running."""
    stopped = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else ():
        if entry.name == "cache" or not entry.is_dir():
            continue
        for pid_file in entry.glob("**/daemon/daemon.pid"):
            state_dir = pid_file.parent.parent
            if daemon_pid(state_dir) is not None and stop(state_dir):
                stopped.append(state_dir)
    return stopped


def mb(r: dict[str, float] | None, key: str = "rss_mb") -> str:
    return "none" if r is None else f"{r[key]:.0f}"
