"""The client of the session daemon: what ``handoff-lsp`` and the ``handoff`` CLI use (with
:mod:`.protocol`, the only part of ``agent/`` the LSP front imports).

:class:`DaemonClient` finds the daemon of a state folder through its socket, starts one when none
runs (detached: it outlives its starter), checks the protocol version (an idle daemon of another
version is replaced; a busy one is left running, with a message naming ``handoff daemon stop``),
and then sends requests and hands the daemon's notifications to callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from handoff import __version__

from . import protocol
from .processes import pid_alive
from .protocol import RemoteError
from .rpc import Connection, ConnectionLost, spawn_serve
from .store import state_root

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0

__all__ = ["ConnectionLost", "DaemonClient", "DaemonUnavailable", "RemoteError", "stop_daemon"]


class DaemonUnavailable(RemoteError):
    """No daemon could be reached or started; the message says why."""


def _log_tail(root: Path, lines: int = 5) -> str:
    try:
        text = protocol.log_path(root).read_text("utf-8", "replace")
    except OSError:
        return ""
    tail = [line for line in text.strip().splitlines()[-lines:] if line.strip()]
    return (" (its log ends: " + " | ".join(tail) + ")") if tail else ""


def start_daemon(root: Path) -> None:
    """Start a detached daemon for ``root`` (blocking; returns once it has forked away)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "handoff.agent.daemon", "--state-dir", str(root), "--detach"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            cwd="/",
            timeout=START_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DaemonUnavailable(f"the Handoff daemon could not be started: {exc}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DaemonUnavailable(
            err[-1] if err else f"the Handoff daemon exited with code {proc.returncode}"
        )


class DaemonClient:
    def __init__(
        self,
        root: Path | None = None,
        *,
        name: str = "handoff",
        on_session: Callable[[dict[str, Any]], None] | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.root = Path(root) if root is not None else state_root()
        self.name = name
        self.on_session = on_session
        self.on_progress = on_progress
        self.conn: Connection | None = None
        self.info: protocol.InitializeResult | None = None
        self.started = False  # this client started the daemon it talks to
        self._reader: asyncio.Task[None] | None = None
        self.lost = asyncio.Event()  # the connection ended (the daemon stopped or died)

    @property
    def socket(self) -> Path:
        return protocol.socket_path(self.root)

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.closed.is_set()

    # -- connecting ------------------------------------------------------------------------
    async def _open(self) -> Connection | None:
        try:
            reader, writer = await asyncio.open_unix_connection(
                str(self.socket), limit=protocol.LINE_LIMIT
            )
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        except PermissionError as exc:
            raise DaemonUnavailable(
                f"the Handoff daemon's socket {self.socket} is not ours: {exc.strerror}"
            ) from None
        return Connection(reader, writer, self._dispatch, name="daemon")

    async def connect(self, *, start: bool = True) -> protocol.InitializeResult:
        """Connect (starting a daemon when none runs and ``start``), then shake hands."""
        for _attempt in range(2):
            conn = await self._open()
            if conn is None:
                if not start:
                    raise DaemonUnavailable("no Handoff daemon is running")
                conn = await self._start_and_open()
            self.conn = conn
            self.lost = asyncio.Event()
            self._reader = spawn_serve(conn, lambda c: self.lost.set())
            try:
                info: protocol.InitializeResult = await conn.request(
                    protocol.INITIALIZE,
                    {
                        "protocolVersion": protocol.PROTOCOL_VERSION,
                        "client": {"name": self.name, "pid": os.getpid()},
                    },
                )
            except ConnectionLost:
                raise DaemonUnavailable(
                    "the Handoff daemon closed the connection" + _log_tail(self.root)
                ) from None
            if info.get("protocolVersion") == protocol.PROTOCOL_VERSION:
                self.info = info
                return info
            if info.get("active", 0) or not start:
                await self.close()
                raise DaemonUnavailable(
                    f"a Handoff daemon of another version ({info.get('version')}, protocol "
                    f"{info.get('protocolVersion')}; this is {__version__}, protocol "
                    f"{protocol.PROTOCOL_VERSION}) is running with {info.get('active', 0)} active "
                    "session(s); when they are done, run `handoff daemon stop`"
                )
            with contextlib.suppress(RemoteError):  # idle: replace it
                await conn.request(protocol.SHUTDOWN, {})
            await self._wait_gone()
            await self.close()
        raise DaemonUnavailable("the Handoff daemon of another version did not stop")

    async def _start_and_open(self) -> Connection:
        await asyncio.to_thread(start_daemon, self.root)
        self.started = True
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            conn = await self._open()
            if conn is not None:
                return conn
            await asyncio.sleep(0.02)
        raise DaemonUnavailable(
            f"the Handoff daemon did not come up within {START_TIMEOUT_S:g} s"
            + _log_tail(self.root)
        )

    async def _wait_gone(self) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self.socket.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self.conn = None

    # -- talking ---------------------------------------------------------------------------
    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        if self.conn is None or self.conn.closed.is_set():
            raise ConnectionLost()
        return await self.conn.request(method, params or {})

    def _dispatch(self, conn: Connection, method: str, params: dict[str, Any]) -> Any:
        if method == protocol.SESSION and self.on_session is not None:
            self.on_session(params.get("session") or {})
        elif method == protocol.PROGRESS and self.on_progress is not None:
            self.on_progress(params)
        return None


def client_env() -> dict[str, str]:
    """What a request carries of this process's environment (configuration and agents' variables)."""
    return dict(os.environ)


# -- without an event loop: status and stop --------------------------------------------------
def _request_sync(root: Path, method: str, timeout: float = 5.0) -> Any:
    """One request to a running daemon over a plain socket; None when none answers."""
    path = protocol.socket_path(root)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            hello = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": protocol.INITIALIZE,
                "params": {
                    "protocolVersion": protocol.PROTOCOL_VERSION,
                    "client": {"name": "handoff", "pid": os.getpid()},
                },
            }
            sock.sendall(
                protocol.encode(hello)
                + protocol.encode({"jsonrpc": "2.0", "id": 2, "method": method, "params": {}})
            )
            with sock.makefile("rb") as f:
                for line in f:
                    message = json.loads(line)
                    if message.get("id") == 2:
                        if "error" in message:
                            raise RemoteError(message["error"].get("message", "error"))
                        return message.get("result")
                    if message.get("id") is None and "error" in message:
                        raise RemoteError(message["error"].get("message", "error"))
    except (TimeoutError, FileNotFoundError, ConnectionRefusedError, OSError, ValueError):
        return None
    return None


def status(root: Path | None = None) -> protocol.StatusResult | None:
    result: protocol.StatusResult | None = _request_sync(root or state_root(), protocol.STATUS)
    return result


def _pid(root: Path) -> int | None:
    try:
        return int((protocol.daemon_dir(root) / "daemon.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def stop_daemon(root: Path | None = None, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop the daemon of ``root`` (its running sessions become ``interrupted``); False when
    none ran. A daemon that does not stop in ``timeout`` is killed."""
    root = root or state_root()
    pid = _pid(root)
    answered = _request_sync(root, protocol.SHUTDOWN) is not None
    if not answered and pid is None:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is None or not _alive(pid):
            return True
        time.sleep(0.05)
    if pid is not None and is_daemon(pid):  # never a stranger that got a stale pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return True


def is_daemon(pid: int) -> bool:
    try:
        return b"handoff.agent.daemon" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


_alive = pid_alive
