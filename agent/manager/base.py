"""The session manager's state: its sessions, their configuration and environment, the
listeners of their changes, loading them from the store, and recording what a
session's worktree holds."""

from __future__ import annotations

import asyncio
import builtins
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from .. import gitops, pool, results
from ..backends.base import AgentError, Backend
from ..config import Config
from ..keptindex import KeptIndex
from ..processes import kill_orphan, pid_alive
from ..secrets import Redactor
from ..session import (
    ACTIVE,
    FINAL,
    Session,
    SessionError,
    State,
    parse_iso,
    transition,
)
from ..store import Store

log = logging.getLogger(__name__)


def make_backend(name: str, config: Config, host: Backend | None = None) -> Backend:
    """The backend for agent ``name`` (``builtin`` or an entry of ``agents``); the built-in agent
    runs in ``host`` (an :class:`~handoff.agent.host.AgentHost`) when there is one."""
    if name == "builtin":
        if host is not None:
            return host
        from ..backends.builtin import BuiltinBackend

        return BuiltinBackend()
    spec = config.agent_spec(name)
    if spec is None:
        raise AgentError(f"no agent called `{name}`: add it under `agents` in .handoff.toml")
    if spec.acp:
        from ..backends.acp import AcpBackend

        return AcpBackend(name, spec.acp)
    from ..backends.command import CommandBackend

    return CommandBackend(name, spec.command or [])


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


def not_ready(s: Session) -> SessionError:
    """Why ``s`` cannot be applied now, for the developer."""
    hint = {
        State.QUEUED: "it has not started yet",
        State.RUNNING: "the agent is still working; wait for it to be ready",
        State.APPLIED: "it was applied already",
        State.DISCARDED: "it was discarded",
        State.FAILED: f"it failed ({s.error}); follow up to retry or discard it",
        State.CANCELLED: "it was cancelled; follow up to resume or discard it",
        State.INTERRUPTED: "it was interrupted; follow up to resume or discard it",
    }.get(s.state, "")
    return SessionError(f"session {s.id} is {s.state.value}, not ready: nothing to apply ({hint})")


def _ended(s: Session) -> float:
    """When a finished session last changed (epoch seconds); now if its record does not say."""
    try:
        return parse_iso(s.updatedAt)
    except (TypeError, ValueError):
        return time.time()


class ManagerBase:
    def __init__(
        self,
        repo_root: Path,
        config: Config,
        *,
        store: Store | None = None,
        backend_factory: Callable[[str, Config], Backend] | None = None,
        agent_host: Backend | None = None,
        executor: Any = None,
    ) -> None:
        self.repo_root = Path(repo_root)
        self.config = config
        self.store = store or Store(self.repo_root, redactor=Redactor([config.apiKey]))
        self.sessions: dict[str, Session] = {}
        self._backend_factory = backend_factory or functools.partial(make_backend, host=agent_host)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._on_change: list[Callable[[Session], None]] = []
        self._on_progress: list[Callable[[Session, str], None]] = []
        self._limiter: anyio.CapacityLimiter | None = None
        self._prepare_limiter: anyio.CapacityLimiter | None = None
        self._closing = False
        self._git_lock = threading.Lock()  # worktree add/remove touch shared git admin files
        # a test's backend_factory may serve any name; the real one is checked in delegate
        self._check_agents = backend_factory is None
        self._questions: dict[str, asyncio.Future[str]] = {}  # permission questions waiting
        # What each session runs with: the configuration and environment of the client that
        # delegated (or followed up) last; the manager's own for sessions loaded from disk.
        self._configs: dict[str, Config] = {}
        self._envs: dict[str, dict[str, str]] = {}
        self._executor = executor  # where `executor = "ray"` sessions run (agent/executors/)
        # the warm pool (agent/pool.py): idle worktrees, used once the daemon starts it
        self.pool = pool.Pool(self.repo_root, self.store.pool_dir, self._git_lock)  # its own
        self._pool_on = False
        self._early: dict[str, pool.Early] = {}  # worktrees readied beside the snapshot
        # the split copy of the index that snapshots start from (agent/keptindex.py): the
        # daemon's, made when it starts the pool
        self.kept: KeptIndex | None = None

    def config_of(self, s: Session) -> Config:
        return self._configs.get(s.id, self.config)

    def subscribe(
        self,
        on_change: Callable[[Session], None],
        on_progress: Callable[[Session, str], None] | None = None,
    ) -> None:
        self._on_change.append(on_change)
        if on_progress:
            self._on_progress.append(on_progress)

    def _changed(self, s: Session) -> None:
        for cb in self._on_change:
            try:
                cb(s)
            except Exception:  # a listener's bug must not kill a session
                log.exception("session listener failed")

    def get(self, session_id: str) -> Session:
        s = self.sessions.get(session_id)
        if s is None:
            raise SessionError(f"no session `{session_id}` in {self.repo_root}")
        return s

    def list(self) -> builtins.list[Session]:
        return sorted(self.sessions.values(), key=lambda s: s.createdAt)

    def load(self, *, sole_owner: bool = False) -> builtins.list[Session]:
        """Read the stored sessions (blocking: call in a worker thread). Sessions whose
        process died while they ran become ``interrupted`` (all that were running, for the
        ``sole_owner``: the daemon, which holds the state folder's lock); applied and discarded
        ones that ended more than ``keepFinishedDays`` ago are forgotten."""
        self.store.ensure_writable()  # a read-only state folder: one clear line, not tracebacks
        keep_s = self.config.keepFinishedDays * 86400
        now = time.time()
        for s in self.store.load_all():
            if (
                keep_s
                and s.state in FINAL
                and s.id not in self.sessions
                and now - _ended(s) > keep_s
            ):
                self.store.remove(s.id)  # its worktree and branch went when it ended
                continue
            elsewhere = not sole_owner and s.pid != os.getpid() and pid_alive(s.pid)
            if s.state in ACTIVE and not elsewhere:
                transition(s, State.INTERRUPTED, error="the process running it stopped")
                kill_orphan(s)
                s.pid = None
                self.store.save(s)
            self.sessions.setdefault(s.id, s)
        return self.list()

    def _remember(self, sid: str, cfg: Config, env: dict[str, str] | None) -> None:
        self._configs[sid] = cfg
        if env is not None:
            self._envs[sid] = env
            self.store.redactor.add_env(env)  # the client's secrets are hidden like ours

    async def _save(self, s: Session) -> None:
        await anyio.to_thread.run_sync(self.store.save, s)
        self._changed(s)

    def _collect(self, s: Session) -> None:
        """Commit the worktree and list what changed against the base (worker thread)."""
        worktree = Path(s.worktree)
        if not worktree.exists():
            return
        gitops.check_worktree_link(self.repo_root, worktree)  # never run git through a forged link
        s.resultCommit = gitops.commit_worktree(
            worktree, f"handoff {s.id}: result", exclude=self.config_of(s).exclude_for(s.agent)
        )
        # the blobs too, kept for the merge plans to come (the conflict check, the apply)
        changed = results.prefetch(self.repo_root, s.baseCommit, s.resultCommit)
        s.filesChanged = [(self.repo_root / c.path).as_uri() for c in changed]

    def _agent_started(self, s: Session, pid: int) -> None:
        s.agentPid = pid
        self.store.save(s)  # small and rare; a crash must find the pid
