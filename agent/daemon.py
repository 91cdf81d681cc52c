"""``handoff daemon``: the one owner of every session of every repository, per user and state
folder (docs/DESIGN.md, "The session daemon").

Editors' language servers (``handoff-lsp``) and the ``handoff`` CLI are its clients over a Unix
socket in a private folder (:func:`.protocol.socket_path`; folder 0700, socket 0600, peers of
another user id refused by ``SO_PEERCRED``). It is started on demand by the first client, detached
from it (a session of its own, no terminal, its log in the state folder), and exits by itself
after ``daemon.idleMinutes`` with no client connected and no session queued or running.

Every state change of a session happens here, in its repository's :class:`SessionManager`; clients
get each change as a ``session`` notification, and an apply is claimed here first, so two
editors never both apply one session.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import fcntl
import inspect
import logging
import os
import secrets
import shutil
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
from handoff import __version__

from . import config as config_mod
from . import gitops, protocol, report, results
from .backends.base import AgentError
from .executors import ClusterError
from .executors.cluster import RayExecutor
from .host import AgentHost
from .manager import DelegateRequest, SessionManager, not_ready
from .protocol import RemoteError, Session, SessionError, State, b64, unb64
from .rpc import Connection
from .secrets import Redactor
from .session import ACTIVE, TransitionError
from .store import Store, state_root

log = logging.getLogger("handoff.agent.daemon")  # also when run as __main__
IDLE_CHECK_S = 5.0
CANCEL_WAIT_S = 10.0
DISCARD_WAIT_S = 60.0
DEFAULT_IDLE_MINUTES = 30.0


def _fail(exc: BaseException) -> RemoteError:
    return RemoteError(str(exc) or type(exc).__name__)


def _same_dir(a: str | Path, b: str | Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _str(params: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = params.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise RemoteError(f"`{key}` must be a non-empty string", protocol.INVALID_PARAMS)
    return value


def _overrides(params: Mapping[str, Any]) -> list[tuple[str, Any]]:
    raw = params.get("overrides") or []
    if not isinstance(raw, list):
        raise RemoteError(
            "`overrides` must be a list of [source, settings]", protocol.INVALID_PARAMS
        )
    out = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise RemoteError(
                "`overrides` must be a list of [source, settings]", protocol.INVALID_PARAMS
            )
        out.append((item[0], item[1]))
    return out


def _env(params: Mapping[str, Any]) -> dict[str, str] | None:
    env = params.get("env")
    if env is None:
        return None
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise RemoteError("`env` must be an object of strings", protocol.INVALID_PARAMS)
    return env


def config_wire(cfg: config_mod.Config) -> dict[str, Any]:
    """The effective configuration as a client sees it (no secret)."""
    d = dataclasses.asdict(cfg)
    d.pop("apiKey", None)
    d["apiKeySet"] = bool(cfg.apiKey)
    return d


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    return int(struct.unpack("3i", creds)[1])


class Daemon:
    def __init__(self, root: Path, *, idle_minutes: float | None = None) -> None:
        self.state_root = root
        self.socket = protocol.socket_path(root)
        self.idle_minutes = idle_minutes  # fixed by --idle-minutes; else from the configuration
        self.configured_idle = DEFAULT_IDLE_MINUTES  # ``daemon.idleMinutes`` of the latest request
        self.managers: dict[Path, SessionManager] = {}
        self._building: dict[Path, asyncio.Task[SessionManager]] = {}
        self.connections: set[Connection] = set()
        # by repository folder (Store.root): every worktree of a repository shares its sessions
        self.subscribers: dict[Path, set[Connection]] = {}
        self.claims: dict[str, tuple[Connection, str]] = {}  # session id -> (holder, token)
        self.agent_host = AgentHost()
        self.ray = RayExecutor()  # sessions with `executor = "ray"`; imports Ray only when used
        self.stopping = asyncio.Event()
        self.started_at = time.time()
        self._last_busy = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._lock_fd: int | None = None
        self._notify: dict[str, bool] = {}  # session id -> notify when it finishes

    # -- life ------------------------------------------------------------------------------
    def take_lock(self) -> bool:
        """One daemon per state folder: False when another holds the lock."""
        folder = protocol.daemon_dir(self.state_root)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    async def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        folder = self.socket.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
        if folder.stat().st_uid != os.getuid():
            raise SystemExit(
                f"handoff daemon: {folder} belongs to another user; refusing to listen there"
            )
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # stale: we hold the lock, so no daemon listens on it
        old_umask = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(
                self._accept, path=str(self.socket), limit=protocol.LINE_LIMIT
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.socket, 0o600)
        pid_file = protocol.daemon_dir(self.state_root) / "daemon.pid"
        pid_file.write_text(f"{os.getpid()}\n")
        log.info(
            "handoff daemon %s (pid %d) listening on %s", __version__, os.getpid(), self.socket
        )
        watchdog = asyncio.get_running_loop().create_task(self._idle_watch())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            await self.stopping.wait()
        finally:
            watchdog.cancel()
            server.close()
            with contextlib.suppress(FileNotFoundError):
                self.socket.unlink()
            with contextlib.suppress(OSError):
                self.socket.parent.rmdir()  # our private folder, when nothing else is in it
            for conn in list(self.connections):
                conn.close()
            await asyncio.gather(
                *(m.close() for m in self.managers.values()), return_exceptions=True
            )
            await self.agent_host.close()
            await self.ray.close()
            with contextlib.suppress(FileNotFoundError):
                pid_file.unlink()
            log.info("handoff daemon stopped")

    def active(self) -> int:
        return sum(
            1 for m in self.managers.values() for s in m.sessions.values() if s.state in ACTIVE
        )

    async def _idle_watch(self) -> None:
        while True:
            minutes = self.idle_minutes if self.idle_minutes is not None else self.configured_idle
            await asyncio.sleep(min(IDLE_CHECK_S, max(0.2, minutes * 6)))
            if self.connections or self.active():
                self._last_busy = time.monotonic()
                continue
            if time.monotonic() - self._last_busy >= minutes * 60:
                log.info("idle for %g minutes: exiting", minutes)
                self.stopping.set()
                return

    # -- connections -----------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = _peer_uid(writer)
        if uid != os.getuid():
            log.warning("refused a client of user id %s", uid)
            with contextlib.suppress(OSError):
                writer.write(
                    protocol.encode(
                        {
                            "jsonrpc": "2.0",
                            "id": None,
                            "error": {
                                "code": protocol.INVALID_REQUEST,
                                "message": "this Handoff daemon serves only its own user",
                            },
                        }
                    )
                )
                writer.close()
            return
        conn = Connection(reader, writer, self.dispatch, name="client")
        self.connections.add(conn)
        self._last_busy = time.monotonic()
        try:
            await conn.serve()
        finally:
            self.connections.discard(conn)
            for subs in self.subscribers.values():
                subs.discard(conn)
            for sid, (holder, _) in list(self.claims.items()):
                if holder is conn:
                    del self.claims[sid]  # a front-end that died mid-apply applied nothing
            self._last_busy = time.monotonic()

    async def dispatch(self, conn: Connection, method: str, params: dict[str, Any]) -> Any:
        handler = self._handlers.get(method)
        if handler is None:
            raise RemoteError(
                f"the Handoff daemon has no method `{method}`", protocol.METHOD_NOT_FOUND
            )
        try:
            result = handler(self, conn, params)
            if inspect.isawaitable(result):
                result = await result
            return result
        except (SessionError, TransitionError, gitops.GitError, AgentError) as exc:
            raise _fail(exc) from None
        except OSError as exc:  # the state folder or the repository could not be written or read
            where = f" ({exc.filename})" if exc.filename else ""
            raise RemoteError(f"{exc.strerror or exc}{where}") from None

    # -- events ----------------------------------------------------------------------------
    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _changed(self, root: Path, s: Session) -> None:
        self._on_loop(self._broadcast_change, root, s)

    def _family(self, root: Path) -> Path:
        """The repository folder of the worktree ``root`` (its subscribers' key)."""
        mgr = self.managers.get(root)
        return mgr.store.root if mgr is not None else root

    def _broadcast_change(self, root: Path, s: Session) -> None:
        wire = s.to_wire()
        for conn in list(self.subscribers.get(self._family(root), ())):
            conn.notify(protocol.SESSION, {"session": wire})
        if s.state in (State.READY, State.FAILED) and self._notify.pop(s.id, False):
            _desktop_notify(s)

    def _progress(self, root: Path, s: Session, message: str) -> None:
        self._on_loop(self._broadcast_progress, root, s, message)

    def _broadcast_progress(self, root: Path, s: Session, message: str) -> None:
        params = {"sessionId": s.id, "message": message, "steps": s.steps, "costUsd": s.costUsd}
        for conn in list(self.subscribers.get(self._family(root), ())):
            conn.notify(protocol.PROGRESS, params)

    # -- repositories ----------------------------------------------------------------------
    async def manager(self, root: Path, like: SessionManager | None = None) -> SessionManager:
        """The manager of the worktree ``root`` (``like``: one of another worktree of the same
        repository, whose store says where the repository's sessions are)."""
        mgr = self.managers.get(root)
        if mgr is not None:
            return mgr
        task = self._building.get(root)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._build(root, like))
            self._building[root] = task
        return await asyncio.shield(task)

    async def _build(self, root: Path, like: SessionManager | None = None) -> SessionManager:
        try:
            cfg, _ = await anyio.to_thread.run_sync(config_mod.load, root)
            self.configured_idle = cfg.daemon.idleMinutes

            def build() -> SessionManager:  # the store asks git where the repository is
                store = None
                if like is not None:
                    store = Store(root, redactor=Redactor([cfg.apiKey]), like=like.store)
                built = SessionManager(
                    root, cfg, agent_host=self.agent_host, executor=self.ray, store=store
                )
                built.load(sole_owner=True)
                return built

            mgr = await anyio.to_thread.run_sync(build)
            await anyio.to_thread.run_sync(mgr.start_pool)  # the warm pool (agent/pool.py)
            mgr.subscribe(lambda s: self._changed(root, s), lambda s, m: self._progress(root, s, m))
            self.managers[root] = mgr
        finally:
            self._building.pop(root, None)
        log.info("repository %s: %d sessions", root, len(mgr.sessions))
        return mgr

    def find(self, session_id: str) -> tuple[SessionManager, Session]:
        for mgr in self.managers.values():
            s = mgr.sessions.get(session_id)
            if s is not None:
                return mgr, s
        raise RemoteError(f"there is no Handoff session `{session_id}`")

    async def _find(self, params: Mapping[str, Any]) -> tuple[SessionManager, Session]:
        """The session ``params["sessionId"]``, loading its repository when ``root`` is given."""
        sid = _str(params, "sessionId")
        assert sid is not None
        root = params.get("root")
        if isinstance(root, str) and root and Path(root) not in self.managers:
            await self.manager(Path(root))
        return self.find(sid)

    async def _config(
        self, root: Path | None, params: Mapping[str, Any]
    ) -> tuple[config_mod.Config, list[str]]:
        env, overrides = _env(params), _overrides(params)
        cfg, messages = await anyio.to_thread.run_sync(
            lambda: config_mod.load(root, env=env, overrides=overrides)
        )
        self.configured_idle = cfg.daemon.idleMinutes  # the latest configuration a client brought
        return cfg, messages

    async def _reach(self, cfg: config_mod.Config) -> None:
        """A session for a Ray cluster fails at once, before anything is made, when the cluster
        cannot be reached."""
        if cfg.executor == "ray":
            try:
                await self.ray.check(cfg)
            except ClusterError as exc:
                raise RemoteError(str(exc)) from None

    # -- handlers --------------------------------------------------------------------------
    def h_initialize(self, conn: Connection, params: dict[str, Any]) -> protocol.InitializeResult:
        client = params.get("client")
        conn.info = dict(client) if isinstance(client, dict) else {}
        return {
            "protocolVersion": protocol.PROTOCOL_VERSION,
            "version": __version__,
            "pid": os.getpid(),
            "active": self.active(),
        }

    def h_status(self, conn: Connection, params: dict[str, Any]) -> protocol.StatusResult:
        counts: dict[str, int] = {}
        for mgr in self.managers.values():
            for s in mgr.sessions.values():
                counts[s.state.value] = counts.get(s.state.value, 0) + 1
        return {
            "pid": os.getpid(),
            "version": __version__,
            "protocolVersion": protocol.PROTOCOL_VERSION,
            "socket": str(self.socket),
            "stateDir": str(self.state_root),
            "sessions": counts,
            "clients": [c.info for c in self.connections if c is not conn],  # type: ignore[misc]
            "repos": [str(r) for r in self.managers],
            "startedAt": self.started_at,
            "executor": self.ray.status(),
            "pool": {str(r): m.pool.usage() for r, m in self.managers.items()},
        }

    def h_shutdown(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        asyncio.get_running_loop().call_soon(self.stopping.set)
        return {}

    async def h_open_repo(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        path = Path(_str(params, "path") or "")
        try:
            root = await anyio.to_thread.run_sync(gitops.find_repo_root, path)
        except gitops.NotARepository as exc:
            raise RemoteError(str(exc), protocol.NOT_A_REPOSITORY) from None
        except OSError as exc:
            raise RemoteError(f"{path}: {exc.strerror or exc}", protocol.NOT_A_REPOSITORY) from None
        mgr = await self.manager(root)
        # the other worktrees of the repository with sessions: theirs are listed too
        for other in await anyio.to_thread.run_sync(mgr.store.roots):
            if other not in self.managers and await anyio.to_thread.run_sync(other.is_dir):
                await self.manager(other, like=mgr)
        family = mgr.store.root
        self.subscribers.setdefault(family, set()).add(conn)
        sessions = [s for m in self.managers.values() if m.store.root == family for s in m.list()]
        return {
            "root": str(root),
            "sessions": [s.to_wire() for s in sorted(sessions, key=lambda s: s.createdAt)],
        }

    @staticmethod
    def _applies_here(s: Session, params: Mapping[str, Any]) -> None:
        """Refuse to apply ``s`` from another worktree than its own: its result was made against
        that tree (its snapshot), and is written there, never into the tree asking."""
        root = params.get("root")
        if isinstance(root, str) and root and s.repoRoot and not _same_dir(root, s.repoRoot):
            raise RemoteError(
                f"session {s.id} was started in the worktree {s.repoRoot}, not in {root}: "
                f"apply it there (`handoff apply {s.id}` in that folder, or open it in the "
                "editor); show, follow-up and discard work from any worktree"
            )

    async def h_config(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        root = _str(params, "root", required=False)
        cfg, messages = await self._config(Path(root) if root else None, params)
        return {"config": config_wire(cfg), "messages": messages}

    async def h_delegate(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        root = Path(_str(params, "root") or "")
        instruction = _str(params, "instruction") or ""
        mgr = await self.manager(root)
        cfg, messages = await self._config(root, params)
        overlays = params.get("overlays") or {}
        if not isinstance(overlays, dict):
            raise RemoteError(
                "`overlays` must be an object of base64 strings", protocol.INVALID_PARAMS
            )
        await self._reach(cfg)
        req = DelegateRequest(
            instruction=instruction,
            file=params.get("file"),
            uri=params.get("uri"),
            range=params.get("range"),
            overlays={k: unb64(v) or b"" for k, v in overlays.items()},
            agent=params.get("agent") or None,
            diagnostics=list(params.get("diagnostics") or []),
            title=params.get("title") or None,
            config=cfg,
            env=_env(params),
        )
        s = mgr.delegate(req)
        self._notify[s.id] = cfg.notify
        return {"session": s.to_wire(), "messages": messages}

    async def h_follow_up(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        mgr, s = await self._find(params)
        instruction = params.get("instruction") or s.instruction
        cfg, _ = await self._config(mgr.repo_root, params)
        await self._reach(cfg)
        s = mgr.follow_up(s.id, instruction, config=cfg, env=_env(params))
        self._notify[s.id] = cfg.notify
        return {"session": s.to_wire()}

    async def h_cancel(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        mgr, s = await self._find(params)
        if s.state not in ACTIVE:
            raise RemoteError(f"session {s.id} is {s.state.value}, not running: nothing to cancel")
        mgr.cancel(s.id)
        if params.get("wait"):
            with anyio.move_on_after(CANCEL_WAIT_S):
                await mgr.wait(s.id)
        return {"session": s.to_wire()}

    async def h_discard(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        mgr, s = await self._find(params)
        if s.state in ACTIVE:
            mgr.cancel(s.id)
            with anyio.move_on_after(DISCARD_WAIT_S):  # a snapshot under way finishes first
                await mgr.wait(s.id)
        holder = self.claims.get(s.id)
        if holder is not None and holder[0] is not conn:
            raise RemoteError(f"session {s.id} is being applied from another editor; try again")
        await anyio.to_thread.run_sync(mgr.discard, s.id)
        self.claims.pop(s.id, None)
        return {}

    async def h_get(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        _, s = await self._find(params)
        return {"session": s.to_wire()}

    def _claim(self, conn: Connection, s: Session) -> str:
        if s.state is not State.READY:
            raise not_ready(s)
        holder = self.claims.get(s.id)
        if holder is not None and holder[0] is not conn:
            raise RemoteError(f"session {s.id} is being applied from another editor or terminal")
        token = holder[1] if holder is not None else secrets.token_hex(8)
        self.claims[s.id] = (conn, token)
        return token

    async def h_plan(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        mgr, s = await self._find(params)
        current = params.get("current") or {}
        if not isinstance(current, dict):
            raise RemoteError("`current` must be an object", protocol.INVALID_PARAMS)
        if params.get("claim"):
            self._applies_here(s, params)
        token = self._claim(conn, s) if params.get("claim") else None
        if s.state is not State.READY:
            raise not_ready(s)

        read: dict[
            str, bytes | None
        ] = {}  # what the merge took from the disk: the client edits that

        def read_current(path: str) -> bytes | None:
            if path in current:
                return unb64(current[path])
            if path not in read:
                read[path] = mgr.read_disk(path)
            return read[path]

        try:
            plans = await anyio.to_thread.run_sync(mgr.plan, s.id, read_current)
        except BaseException:
            if token is not None:
                self.claims.pop(s.id, None)
            raise
        files: list[protocol.PlannedFile] = [
            {
                "path": p.path,
                "action": p.action,
                "content": b64(p.content),
                "conflicts": [{"start": c.start, "end": c.end} for c in p.conflicts],
                "oldPath": p.old_path,
                "reason": p.reason,
                "resolved": b64(p.resolved),
                "mode": p.mode,
                "currentMode": p.current_mode,
            }
            for p in plans
        ]
        if params.get("recordConflicts"):
            count = sum(max(1, len(p.conflicts)) for p in plans if p.action == "conflict")
            if count != s.conflicts:
                await anyio.to_thread.run_sync(mgr.set_conflicts, s.id, count)
        result: dict[str, Any] = {"files": files, "disk": {k: b64(v) for k, v in read.items()}}
        if token is not None:
            result["claim"] = token
        return result

    async def h_finish_apply(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        mgr, s = await self._find(params)
        holder = self.claims.get(s.id)
        if holder is None or holder[0] is not conn or holder[1] != params.get("claim"):
            raise RemoteError(f"session {s.id}: this apply was not claimed (or the claim was lost)")
        try:
            if params.get("applied"):
                await anyio.to_thread.run_sync(mgr.mark_applied, s.id)
            elif isinstance(params.get("conflicts"), int):
                await anyio.to_thread.run_sync(mgr.set_conflicts, s.id, params["conflicts"])
        finally:
            self.claims.pop(s.id, None)
        return {"session": s.to_wire()}

    async def h_reject_changes(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        mgr, s = await self._find(params)
        raw = params.get("reverts")
        if (
            not isinstance(raw, list)
            or not raw
            or not all(isinstance(r, dict) and isinstance(r.get("path"), str) for r in raw)
        ):
            raise RemoteError(
                "`reverts` must be a non-empty list of {path, oldPath?, merged?, kept?}",
                protocol.INVALID_PARAMS,
            )
        reverts = [
            results.Revert(
                r["path"], r.get("oldPath"), unb64(r.get("merged")), unb64(r.get("kept"))
            )
            for r in raw
        ]
        self._claim(conn, s)  # not while another editor applies it
        try:
            await anyio.to_thread.run_sync(
                mgr.reject_changes, s.id, reverts, str(params.get("note") or "")
            )
            if params.get("finish"):  # nothing left to review: what was kept is in the files
                await anyio.to_thread.run_sync(
                    mgr.mark_applied if s.filesChanged else mgr.discard, s.id
                )
        finally:
            self.claims.pop(s.id, None)
        return {"session": s.to_wire()}

    async def h_record_hunks(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        mgr, s = await self._find(params)
        count = params.get("hunks")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise RemoteError("`hunks` must be a count", protocol.INVALID_PARAMS)
        await anyio.to_thread.run_sync(mgr.set_hunks, s.id, count)
        return {"session": s.to_wire()}

    async def h_apply_to_disk(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        mgr, s = await self._find(params)
        self._applies_here(s, params)
        self._claim(conn, s)
        try:
            rep = await anyio.to_thread.run_sync(
                lambda: mgr.apply_to_disk(
                    s.id, conflict_markers=bool(params.get("conflictMarkers"))
                )
            )
        finally:
            self.claims.pop(s.id, None)
        return {
            "written": rep.written,
            "conflicts": [
                {
                    "path": fm.path,
                    "reason": fm.reason,
                    "conflicts": [{"start": c.start, "end": c.end} for c in fm.conflicts],
                }
                for fm in rep.conflicts
            ],
        }

    async def h_diff(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        mgr, s = await self._find(params)
        return {"diff": await anyio.to_thread.run_sync(mgr.diff, s.id)}

    async def h_report(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        mgr, s = await self._find(params)
        path = await anyio.to_thread.run_sync(report.write, mgr, s)
        return {"path": str(path)}

    async def h_gc(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        mgr = await self.manager(Path(_str(params, "root") or ""))
        idle = mgr.pool.usage()  # what gc removes of the warm pool
        removed = await anyio.to_thread.run_sync(mgr.gc)
        return {"removed": removed, "poolRemoved": idle["worktrees"], "poolBytes": idle["bytes"]}

    async def h_answer(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        mgr, s = await self._find(params)
        option = _str(params, "optionId") or ""
        return {"session": mgr.answer(s.id, option).to_wire()}

    async def h_agents(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        from .presets import agents_report

        root = _str(params, "root", required=False)
        cfg, _ = await self._config(Path(root) if root else None, params)
        rows = await anyio.to_thread.run_sync(agents_report, cfg, _env(params))
        return {"agents": [r.to_dict() for r in rows]}

    async def h_trust(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        from . import trust

        root = Path(_str(params, "root") or "")
        try:
            state = await anyio.to_thread.run_sync(trust.trust, root)
        except ValueError as exc:
            raise RemoteError(str(exc)) from None
        return {"file": str(state.file), "guarded": list(state.guarded)}

    _handlers = {
        protocol.INITIALIZE: h_initialize,
        protocol.STATUS: h_status,
        protocol.SHUTDOWN: h_shutdown,
        protocol.OPEN_REPO: h_open_repo,
        protocol.CONFIG: h_config,
        protocol.DELEGATE: h_delegate,
        protocol.FOLLOW_UP: h_follow_up,
        protocol.CANCEL: h_cancel,
        protocol.DISCARD: h_discard,
        protocol.GET: h_get,
        protocol.PLAN: h_plan,
        protocol.FINISH_APPLY: h_finish_apply,
        protocol.APPLY_TO_DISK: h_apply_to_disk,
        protocol.DIFF: h_diff,
        protocol.REPORT: h_report,
        protocol.GC: h_gc,
        protocol.TRUST: h_trust,
        protocol.ANSWER: h_answer,
        protocol.AGENTS: h_agents,
        protocol.REJECT_CHANGES: h_reject_changes,
        protocol.RECORD_HUNKS: h_record_hunks,
    }


def _desktop_notify(s: Session) -> None:
    """``notify = true``: a desktop notification when a session finishes (where notify-send is)."""
    exe = shutil.which("notify-send")
    if exe is None:
        return
    body = s.summary if s.state is State.READY else (s.error or "")
    import subprocess

    with contextlib.suppress(OSError):
        subprocess.Popen(
            [exe, "--app-name=Handoff", f"Handoff: {s.title} is {s.state.value}", body[:300]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


def _logging(root: Path, level: str) -> None:
    path = protocol.log_path(root)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("handoff").setLevel(level)


def _usable(root: Path) -> str | None:
    """Why the daemon cannot keep its files under ``root``; None when it can."""
    folder = protocol.daemon_dir(root)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return (
            f"handoff daemon: cannot write the state folder {root} ({exc.strerror or exc}); "
            "set HANDOFF_STATE_DIR to a folder you may write"
        )
    return None


def _detach(root: Path) -> None:
    """Fork away from the starter (which only waits for this first process), in a session of
    our own with no terminal; stdin from /dev/null, stdout and stderr to the log."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    log_file = protocol.log_path(root)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)


def run(
    root: Path | None = None, *, idle_minutes: float | None = None, detach: bool = False
) -> int:
    """Run the daemon in this process until it stops; 0 also when another one already runs."""
    root = root or state_root()
    problem = _usable(root)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if detach:
        _detach(root)
    daemon = Daemon(root, idle_minutes=idle_minutes)
    if not daemon.take_lock():
        return 0  # another daemon has this state folder
    _logging(root, os.environ.get("HANDOFF_LOG_LEVEL", "INFO").upper())
    try:
        asyncio.run(daemon.serve())
    except SystemExit as exc:
        log.error("%s", exc)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m handoff.agent.daemon")
    p.add_argument("--state-dir", type=Path, default=None)
    p.add_argument("--idle-minutes", type=float, default=None)
    p.add_argument("--detach", action="store_true", help="fork into the background")
    args = p.parse_args(argv)
    return run(args.state_dir, idle_minutes=args.idle_minutes, detach=args.detach)


if __name__ == "__main__":
    sys.exit(main())
