"""A real Ray head on 127.0.0.1 for tests and benchmarks, in a loopback-only network namespace.

Ray registers the machine's interface address as its node's, so :func:`ray_head` first makes a
network namespace with only loopback (``unshare --net`` + ``ip link set lo up``; root) and moves
the calling thread into it (``setns``): everything it starts after (the head, the ``handoff``
CLI, the daemon that starts, a scripted model's threads) lives there, and nothing leaves it.
Token auth on (Ray 2.60 asks for it), usage stats off. On exit every process of the namespace
(all started from here) is ended and the thread goes back to the machine's namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RAY_BIN = Path(sys.executable).parent / "ray"
CLONE_NEWNET = 0x40000000


def missing() -> str | None:
    """Why a Ray head cannot be started here (None: it can)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return 'ray is not installed (pip install -e ".[ray]")'
    if not shutil.which("unshare") or not shutil.which("ip") or os.geteuid() != 0:
        return "unshare, ip and root are needed (a loopback-only network namespace)"
    return None


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _in_namespace(ns_inode: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}/ns/net").st_ino == ns_inode:
                    pids.append(int(entry))
    return pids


@contextlib.contextmanager
def ray_head(num_cpus: int = 16) -> Iterator[dict[str, Any]]:
    """Yields ``{address, workdir, logs, startS}``; the environment of this process carries
    what clients need (RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH) until the end."""
    holder = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", "ip link set lo up && echo up && exec sleep 100000"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"up\n"
    ns_inode = os.stat(f"/proc/{holder.pid}/ns/net").st_ino
    home_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    ns = os.open(f"/proc/{holder.pid}/ns/net", os.O_RDONLY)
    _setns(ns)
    os.close(ns)
    top = Path(tempfile.mkdtemp(prefix="hr-"))  # short: Ray's sockets live under --temp-dir
    token = top / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    saved = dict(os.environ)
    port = free_port()
    os.environ.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_USAGE_STATS_ENABLED="0",
        HANDOFF_RAY_WORKDIR=str(top / "w"),  # the workers' folders (their environment)
    )
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [
                str(RAY_BIN),
                "start",
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={port}",
                f"--num-cpus={num_cpus}",
                f"--temp-dir={top / 't'}",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"ray start failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        yield {
            "address": f"127.0.0.1:{port}",
            "workdir": top / "w",
            "logs": top / "t",
            "startS": time.monotonic() - started,
        }
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # every process in the namespace is ours
            for pid in _in_namespace(ns_inode):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(0.5)
        holder.wait(timeout=10)
        _setns(home_ns)
        os.close(home_ns)
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(top, ignore_errors=True)
