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
    """Lower the CPU priority of process ``pid`` (None: this process) to :data:`AGENT_NICE`.

    Agents run in sessions of their own (``start_new_session``), and Linux's autogroup
    scheduling (on by default) gives every session one scheduling group whose weight is set by
    the group's nice, not by its processes': an agent at nice 19 in its own session still
    competes with the editor's whole session as an equal. So a process that leads its own
    session gets its group's nice lowered too. Never another's: a process in the editor's
    session leaves the group alone (lowering it would slow the editor)."""
    target = pid or os.getpid()
    try:
        os.setpriority(os.PRIO_PROCESS, target, max(AGENT_NICE, os.getpriority(os.PRIO_PROCESS, target)))
    except OSError:  # gone already, or a platform without priorities
        pass
    try:
        if os.getsid(target) != target:
            return
        group = Path(f"/proc/{target}/autogroup")
        nice = int(group.read_text().rsplit("nice", 1)[1])
        if nice < AGENT_NICE:
            group.write_text(str(AGENT_NICE))
    except (OSError, ValueError, IndexError):  # gone, not Linux, or no autogroup in this kernel
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
