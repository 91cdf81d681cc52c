"""Agents' processes: their CPU priority, and what a session leaves behind (found and killed,
never a stranger's)."""

from __future__ import annotations

import os
import platform
import signal
import struct
import sys
from pathlib import Path

from .session import Session

# Agents work in the background: they get the CPU the editor and its language server leave
# (nice 19, the lowest: on a busy machine the server is scheduled first; on an idle one agents
# lose nothing).
AGENT_NICE = 19
# And they ask for the shortest scheduler slice Linux grants (6.12 and later: sched_setattr's
# sched_runtime for normal tasks; older kernels ignore it): an agent that has just got the CPU
# keeps it against a waking editor or server for at most this long, instead of a default slice
# (0.7-3 ms). Agents pay a few more context switches, and only when the CPU is contended.
AGENT_SLICE_NS = 100_000
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}  # the system call's number; not in os


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
        nice = max(AGENT_NICE, os.getpriority(os.PRIO_PROCESS, target))
        os.setpriority(os.PRIO_PROCESS, target, nice)
    except OSError:  # gone already, or a platform without priorities
        return
    _short_slice(target, nice)
    try:
        if os.getsid(target) != target:
            return
        group = Path(f"/proc/{target}/autogroup")
        if int(group.read_text().rsplit("nice", 1)[1]) < AGENT_NICE:
            group.write_text(str(AGENT_NICE))
    except (OSError, ValueError, IndexError):  # gone, not Linux, or no autogroup in this kernel
        pass


def in_background_group(argv: list[str]) -> list[str]:
    """``argv`` started through a shell that first lowers its own session's scheduling group to
    :data:`AGENT_NICE`, then becomes ``argv`` (``exec``): for a command started with
    ``start_new_session``, whose group :func:`background` would lower only after ``Popen``
    returns, by which time a quick command may be done (``sandbox.prepare`` gives it to every
    command it launches; whoever starts one still calls :func:`background` for the process
    itself). For launchers that always exist (a shell, the sandbox's): a missing program would
    fail in the shell, not in ``Popen``."""
    if not Path("/proc/self/autogroup").exists():
        return argv
    lower = f'echo {AGENT_NICE} > /proc/self/autogroup 2>/dev/null; exec "$@"'
    return ["/bin/sh", "-c", lower, "sh", *argv]


def _short_slice(pid: int, nice: int) -> None:
    """Ask for :data:`AGENT_SLICE_NS` for ``pid``'s main thread (threads and children it starts
    after this inherit it). Best effort: nothing happens where the call does not exist."""
    number = _SCHED_SETATTR.get(platform.machine())
    if number is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    # struct sched_attr (version 0, 48 bytes): size, policy (SCHED_OTHER), flags, nice,
    # priority, runtime (the slice), deadline, period.
    attr = struct.pack("=IIQiIQQQ", 48, 0, 0, nice, 0, AGENT_SLICE_NS, 0, 0)
    ctypes.CDLL(None, use_errno=True).syscall(number, pid, ctypes.create_string_buffer(attr), 0)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not reaped yet) runs nothing any more
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
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


def kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (gone already, or not ours: nothing)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
