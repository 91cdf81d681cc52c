"""Processes a session leaves behind: finding and killing them, never a stranger's."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from .session import Session

# Agents work in the background: they get the CPU the editor and its language server leave
# (nice 19, the lowest: on a busy machine the server is scheduled first; on an idle one agents
# lose nothing).
AGENT_NICE = 19


def background(pid: int | None = None) -> None:
    """Lower the CPU priority of process ``pid`` (None: this process) to :data:`AGENT_NICE`."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid or 0, max(AGENT_NICE, os.getpriority(os.PRIO_PROCESS, pid or 0)))
    except OSError:  # gone already, or a platform without priorities
        pass


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_orphan(s: Session) -> None:
    """Kill an agent process group that outlived the process that ran its session, if it
    still runs in that session's worktree (so a reused pid is never hit)."""
    pid, s.agentPid = s.agentPid, None
    if not pid or not s.worktree:
        return
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return
    if Path(cwd).resolve() == Path(s.worktree).resolve() or cwd.startswith(s.worktree + os.sep):
        from .backends.command import kill_group

        kill_group(pid)


def kill_processes_in(folder: Path) -> None:
    """Kill every process whose working directory is ``folder`` or below it."""
    top = os.path.realpath(folder)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == top or cwd.startswith(top + os.sep):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
