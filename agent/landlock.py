"""Landlock, the fallback sandbox of ``run_command`` when bubblewrap cannot be had.

Plain syscalls through ctypes (the PyPI ``landlock`` package handles only file system
rights; this needs TCP rules, ABI 4, and signal / abstract-socket scoping, ABI 6).

The module runs as a script, with the standard library only: ``python -I -S landlock.py
--landlock SPEC -- argv...`` forks; the child confines itself (read-only everywhere granted,
read-write in the worktree and a scratch folder, no TCP, no signals or abstract unix sockets
outside its domain) and execs argv; the parent, unconfined, is the subreaper of everything
the command starts and kills it all when the command ends or when it gets SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

MIN_ABI = 6  # 4 brings TCP rules, 6 scopes signals and abstract unix sockets

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS = 1, 36, 38
_RULE_PATH_BENEATH = 1
_FS = {
    "execute": 1 << 0,
    "write_file": 1 << 1,
    "read_file": 1 << 2,
    "read_dir": 1 << 3,
    "remove_dir": 1 << 4,
    "remove_file": 1 << 5,
    "make_char": 1 << 6,
    "make_dir": 1 << 7,
    "make_reg": 1 << 8,
    "make_sock": 1 << 9,
    "make_fifo": 1 << 10,
    "make_block": 1 << 11,
    "make_sym": 1 << 12,
    "refer": 1 << 13,
    "truncate": 1 << 14,
    "ioctl_dev": 1 << 15,
}
_FILE_RIGHTS = (
    _FS["execute"] | _FS["write_file"] | _FS["read_file"] | _FS["truncate"] | _FS["ioctl_dev"]
)
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1, 2


def abi_version() -> int:
    """The Landlock ABI version of the running kernel; 0 when Landlock is unavailable."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        abi = libc.syscall(
            _SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
        )
    except (OSError, AttributeError):
        return 0
    return max(0, int(abi))


def restrict(spec: dict[str, Any]) -> None:
    """Confine the calling (single-threaded) process and its future children."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    abi = abi_version()
    if abi < MIN_ABI:
        raise OSError(f"Landlock ABI {abi} is too old (need {MIN_ABI})")
    handled = (1 << 16) - 1  # every right up to IOCTL_DEV (ABI 5)

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]

    def check(result: int, what: str) -> int:
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")
        return result

    attr = RulesetAttr(
        handled, _NET_BIND_TCP | _NET_CONNECT_TCP, _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL
    )
    ruleset = check(
        libc.syscall(
            _SYS_CREATE_RULESET,
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
            ctypes.c_uint32(0),
        ),
        "landlock_create_ruleset",
    )

    def allow(path: str, rights: int) -> None:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return  # vanished or unreadable: nothing to grant
        try:
            if not os.path.isdir(f"/proc/self/fd/{fd}"):
                rights &= _FILE_RIGHTS
            rule = PathBeneath(rights, fd)
            check(
                libc.syscall(
                    _SYS_ADD_RULE,
                    ctypes.c_int(ruleset),
                    ctypes.c_int(_RULE_PATH_BENEATH),
                    ctypes.byref(rule),
                    ctypes.c_uint32(0),
                ),
                f"landlock_add_rule {path}",
            )
        finally:
            os.close(fd)

    read = _FS["execute"] | _FS["read_file"] | _FS["read_dir"]
    for path in spec["read"]:
        allow(path, read)
    allow("/proc/self", read)  # our own pid folder, inherited by exec (children get none)
    for path in spec["devices"]:
        allow(path, _FS["read_file"] | _FS["write_file"] | _FS["truncate"] | _FS["ioctl_dev"])
    for path in spec["write"]:
        allow(path, handled)
    check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    check(
        libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)),
        "landlock_restrict_self",
    )
    os.close(ruleset)


class _Stop(Exception):
    pass


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    data = f.read()
                parents[int(name)] = int(data[data.rindex(b")") + 2 :].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier and p not in found]
        found += kids
        frontier = kids
    return found


def _kill_descendants() -> None:
    """Kill every process below us (orphans were reparented to us: we are their subreaper)."""
    me = os.getpid()
    for _ in range(200):
        pids = _descendants(me)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        if not pids:
            return
        import time

        time.sleep(0.01)


def _helper(argv: list[str]) -> int:
    """``--landlock SPEC -- argv...``: run argv confined, and kill all it started when it
    ends or when we get SIGTERM (our parent died, or the command timed out)."""
    import ctypes

    spec = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    command = argv[3:]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    def stop(signum: int, frame: object) -> NoReturn:
        raise _Stop()

    signal.signal(signal.SIGTERM, stop)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the command: confined, then exec
        os.close(read_end)
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            restrict(spec)
            os.execv(command[0], command)
        except BaseException as exc:
            os.write(write_end, f"handoff sandbox: {exc}\n".encode())
        os._exit(126)
    os.close(write_end)
    code = 1
    try:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code
    except _Stop:
        code = 143
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _kill_descendants()
    error = os.read(read_end, 4096)
    if error:
        sys.stderr.write(error.decode("utf-8", "replace"))
    return code


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--landlock" and sys.argv[3] == "--":
        sys.exit(_helper(sys.argv[1:]))
    sys.exit("usage: landlock.py --landlock SPEC -- argv...")
