"""Sessions of one repository: create, run (at most ``maxParallel`` at once), cancel,
follow up, apply, discard. The one owner of session state transitions at run time.

Everything slow (git, disk walks, the agent) runs in background tasks or worker threads:
``delegate`` returns at once with a queued session, so an editor never waits on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from handoff.text import title_of

from . import gitops, pool, results
from .backends.base import AgentContext, AgentError, Backend
from .brief import Origin, build_brief
from .config import Config
from .merge import FileMerge
from .processes import kill_orphan, kill_processes_in, pid_alive
from .secrets import Redactor
from .session import (
    ACTIVE,
    FINAL,
    Session,
    SessionError,
    State,
    TransitionError,
    new_id,
    now_iso,
    parse_iso,
    transition,
)
from .store import Store, unfinished_ids

log = logging.getLogger(__name__)

GUIDES = ("AGENTS.md", "CLAUDE.md")


@dataclasses.dataclass
class DelegateRequest:
    instruction: str
    file: str | None = None  # repository-relative posix path of the origin
    uri: str | None = None
    range: dict[str, Any] | None = None
    overlays: dict[str, bytes] = dataclasses.field(default_factory=dict)  # unsaved buffers
    agent: str | None = None
    diagnostics: list[str] = dataclasses.field(default_factory=list)
    title: str | None = None
    config: Config | None = None  # the effective configuration of the client that asked
    env: dict[str, str] | None = None  # that client's environment, for the agent's variables


@dataclasses.dataclass
class ApplyReport:
    written: list[str]
    conflicts: list[FileMerge]


PREPARE_THREADS = 2  # snapshots prepared at once (per repository)


def make_backend(name: str, config: Config, host: Backend | None = None) -> Backend:
    """The backend for agent ``name`` (``builtin`` or an entry of ``agents``); the built-in agent
    runs in ``host`` (an :class:`~handoff.agent.host.AgentHost`) when there is one."""
    if name == "builtin":
        if host is not None:
            return host
        from .backends.builtin import BuiltinBackend

        return BuiltinBackend()
    spec = config.agent_spec(name)
    if spec is None:
        raise AgentError(f"no agent called `{name}`: add it under `agents` in .handoff.toml")
    if spec.acp:
        from .backends.acp import AcpBackend

        return AcpBackend(name, spec.acp)
    from .backends.command import CommandBackend

    return CommandBackend(name, spec.command or [])


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


def _worktree_gone(worktree: Path) -> str:
    return (
        f"the session's worktree {worktree} was deleted while the agent ran; there is no "
        "result to collect (discard the session to clean up)"
    )


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


class SessionManager:
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

    def start_pool(self) -> None:
        """Keep ``pool.size`` idle worktrees ready for this repository's sessions (the daemon
        calls it; blocking: first removes what a crash left half-made in the pool folder)."""
        self._pool_on = True
        self.pool.recover()
        self.pool.ensure(self.config.pool.size)

    def config_of(self, s: Session) -> Config:
        return self._configs.get(s.id, self.config)

    # -- observation -------------------------------------------------------------------
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

    def list(self) -> list[Session]:
        return sorted(self.sessions.values(), key=lambda s: s.createdAt)

    # -- loading ----------------------------------------------------------------------
    def load(self, *, sole_owner: bool = False) -> list[Session]:
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

    # -- running ----------------------------------------------------------------------
    def _spawn(self, s: Session, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"handoff-session-{s.id}")
        self._tasks[s.id] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._tasks.get(s.id) is t:
                del self._tasks[s.id]
            if not t.cancelled() and t.exception() is not None:
                log.error("session %s crashed", s.id, exc_info=t.exception())
            if t.cancelled() and s.state in ACTIVE:
                # cancelled before it ever ran (cancel right after delegate): no handler saw it
                transition(
                    s,
                    State.INTERRUPTED if self._closing else State.CANCELLED,
                    error="the session daemon stopped before it ran" if self._closing else None,
                )
                s.pid = None
                try:
                    self.store.save(s)
                except OSError:
                    log.exception("session %s: the record could not be saved", s.id)
                self._changed(s)

        task.add_done_callback(done)

    def delegate(self, req: DelegateRequest) -> Session:
        """Create a queued session and start it in the background; returns at once."""
        cfg = req.config or self.config
        agent = req.agent or cfg.agent
        if req.agent is None and cfg.untrusted:  # workspace trust (agent/trust.py)
            raise SessionError(cfg.untrusted)
        if self._check_agents:  # refused before anything is made for it
            from .presets import AgentUnavailable, check_agent

            try:
                if cfg.executor != "ray" or agent == "builtin":  # else installed on the workers
                    check_agent(agent, cfg, req.env)
            except AgentUnavailable as exc:
                raise SessionError(str(exc)) from None
        sid = new_id()
        s = Session(
            id=sid,
            title=req.title or title_of(req.instruction) or "Delegated task",
            state=State.QUEUED,
            uri=req.uri,
            range=req.range,
            agent=agent,
            instruction=req.instruction,
            file=req.file,
            repoRoot=str(self.repo_root),
            branch=f"handoff/{sid}",
            worktree=str(self.store.worktree_path(sid)),
            pid=os.getpid(),
        )
        self.sessions[sid] = s
        self._remember(sid, cfg, req.env)
        self._spawn(s, self._first_run(s, req))
        self._changed(s)
        return s

    def _remember(self, sid: str, cfg: Config, env: dict[str, str] | None) -> None:
        self._configs[sid] = cfg
        if env is not None:
            self._envs[sid] = env
            self.store.redactor.add_env(env)  # the client's secrets are hidden like ours

    async def _first_run(self, s: Session, req: DelegateRequest) -> None:
        async def prepare() -> None:
            # Snapshots on their own few threads: a burst of delegations neither runs dozens of
            # `git add -A` at once nor queues the server's quick thread hops behind them.
            if self._prepare_limiter is None:
                self._prepare_limiter = anyio.CapacityLimiter(PREPARE_THREADS)
            # An agent slot is free: its worktree is checked out while the snapshot is taken.
            early = self._limiter is None or self._limiter.available_tokens > 0
            await anyio.to_thread.run_sync(
                self._prepare, s, req, early, limiter=self._prepare_limiter
            )

        try:
            await self._run(s, prepare)
        finally:
            early = self._early.pop(s.id, None)  # readied early, but no agent ran there
            if early is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self.pool.drop, early)

    def _prepare(self, s: Session, req: DelegateRequest, early: bool = False) -> None:
        """Snapshot what the developer sees and write the brief (worker thread); with ``early``,
        the session's worktree is readied beside it (``Pool.early``: a pooled one made pristine,
        else a checkout of HEAD)."""
        if early:
            cfg = self.config_of(s)
            self._early[s.id] = self.pool.early(use_pool=self._pool_on and cfg.pool.size > 0)
        self.store.save(s)
        t0 = time.monotonic()
        s.baseCommit = gitops.snapshot(
            self.repo_root,
            ref=f"refs/handoff/{s.id}/base",
            overlays=req.overlays,
            message=f"handoff {s.id}: snapshot\n\n{s.title}",
        )
        log.info("%s: snapshot in %.3f s", s.id, time.monotonic() - t0)
        text = None
        if req.file:
            data = req.overlays.get(req.file)
            if data is None:
                data = gitops.read_blob(self.repo_root, s.baseCommit, req.file)
            text = data.decode("utf-8", "replace") if data is not None else None
        guide = None
        for name in GUIDES:
            data = gitops.read_blob(self.repo_root, s.baseCommit, name)
            if data is not None:
                guide = (name, data.decode("utf-8", "replace"))
                break
        brief = build_brief(
            req.instruction,
            Origin(file=req.file, range=req.range, text=text, diagnostics=req.diagnostics),
            test_command=self.config_of(s).testCommand,
            guide=guide,
            submodules=gitops.submodule_paths(self.repo_root, s.baseCommit),
        )
        self.store.write_brief(s.id, brief)
        self.store.save(s)

    async def _run(self, s: Session, prepare=None) -> None:
        """Run the agent once for ``s``: queued -> running -> ready | failed | cancelled."""
        try:
            if prepare is not None:
                await prepare()
            if self._limiter is None:
                self._limiter = anyio.CapacityLimiter(self.config_of(s).maxParallel)
            async with self._limiter:
                transition(s, State.RUNNING)
                s.pid = os.getpid()
                s.runs += 1
                await self._save(s)
                await self._agent_pass(s)
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):
                new = State.INTERRUPTED if self._closing else State.CANCELLED
                if s.state in ACTIVE:
                    msg = "the session daemon stopped while it ran" if self._closing else None
                    transition(s, new, error=msg)
                    s.pid = None
                    await self._save(s)
            raise
        except (AgentError, gitops.GitError, OSError, Exception) as exc:
            if not isinstance(
                exc, (AgentError, gitops.GitError, OSError)
            ):  # a bug: never stuck running
                log.exception("session %s: unexpected error", s.id)
                exc = AgentError(
                    f"Handoff failed unexpectedly ({type(exc).__name__}: {exc}); "
                    "see `handoff daemon logs`"
                )
            if s.state in ACTIVE:
                lost = getattr(exc, "interrupted", False)  # a cluster's worker went away
                new = State.INTERRUPTED if lost else State.FAILED
                transition(s, new, error=self.store.redactor.text(_message(exc)))
                if isinstance(exc, AgentError):
                    s.steps, s.costUsd = max(s.steps, exc.steps), max(s.costUsd, exc.cost_usd)
            s.pid = None
            try:
                await self._save(s)
            except OSError:  # e.g. the disk is full: the session still ends, in memory
                log.exception("session %s: the record could not be saved", s.id)
                self._changed(s)

    async def _agent_pass(self, s: Session) -> None:
        worktree = Path(s.worktree)
        if not worktree.exists():
            await anyio.to_thread.run_sync(self._make_worktree, s)
        config = self.config_of(s)
        if config.executor == "ray":  # the agent runs on a Ray cluster; the result comes back here
            backend = self.remote().backend(self, s)
        else:
            backend = self._backend_factory(s.agent, config)
        history = await anyio.to_thread.run_sync(self.store.load_messages, s.id)

        def progress(message: str, steps: int, cost: float) -> None:
            s.steps, s.costUsd = steps, round(cost, 6)
            for cb in self._on_progress:
                try:
                    cb(s, message)
                except Exception:
                    log.exception("progress listener failed")

        ctx = AgentContext(
            session_id=s.id,
            worktree=worktree,
            instruction=s.instruction,
            brief=self.store.session_dir(s.id).joinpath("task.md").read_text("utf-8"),
            brief_path=self.store.session_dir(s.id) / "task.md",
            config=config,
            env=self._envs.get(s.id),
            file=s.file,
            range=s.range,
            history=history,
            transcript_path=self.store.transcript_path(s.id),
            redactor=self.store.redactor,
            record=lambda event: self.store.append_transcript(s.id, event),
            progress=progress,
            started=lambda pid: self._agent_started(s, pid),
            ask=functools.partial(self._ask, s),
        )
        ctx.record({"type": "start", "run": s.runs, "agent": s.agent, "instruction": s.instruction})
        try:
            outcome = await backend.run(ctx)
        except AgentError:
            if not worktree.exists():
                raise gitops.GitError(_worktree_gone(worktree)) from None
            raise
        finally:
            # Keep what the agent left, even when it failed: follow-ups build on it.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._collect, s)
        if not worktree.exists():
            raise gitops.GitError(_worktree_gone(worktree))
        ctx.record({"type": "finish", "summary": outcome.summary})
        s.summary = self.store.redactor.text(outcome.summary)
        s.steps, s.costUsd = outcome.steps or s.steps, round(outcome.cost_usd or s.costUsd, 6)
        if outcome.messages:
            await anyio.to_thread.run_sync(self.store.save_messages, s.id, outcome.messages)
        transition(s, State.READY)
        s.pid = s.agentPid = None
        await self._save(s)

    def _make_worktree(self, s: Session) -> None:
        """The session's worktree: the one readied beside the snapshot (``Pool.early``), else an
        idle pooled one, either moved to its snapshot (agent/pool.py), else a fresh ``git
        worktree add``; then ``worktree.include`` and ``worktree.setup``
        (worker thread)."""
        cfg = self.config_of(s)
        worktree = Path(s.worktree)
        use_pool = self._pool_on and cfg.pool.size > 0
        ready = self._early.pop(s.id, None)
        early = ready is not None and self.pool.take_early(
            ready, worktree, branch=s.branch, commit=s.baseCommit
        )
        taken = (early and ready.pooled) or (
            not early
            and use_pool
            and self.pool.take(worktree, branch=s.branch, commit=s.baseCommit)
        )
        if not taken and not early:
            with self._git_lock:
                gitops.add_worktree(self.repo_root, worktree, branch=s.branch, commit=s.baseCommit)
        if self._pool_on:
            self.pool.ensure(cfg.pool.size)  # refilled in the background, at idle priority
        included = pool.copy_includes(self.repo_root, worktree, cfg.worktree.include)
        if self._pool_on or included:  # how the worktree was made, before the agent's start
            self.store.append_transcript(
                s.id,
                {
                    "type": "worktree",
                    "pooled": bool(taken),
                    "early": bool(early),  # readied beside the snapshot
                    "included": included,
                },
            )
        if cfg.worktree.setup:
            event: dict[str, Any] = {"type": "setup", "command": cfg.worktree.setup}
            try:
                code, output = pool.run_setup(
                    cfg.worktree.setup,
                    worktree,
                    policy=cfg.commandPolicy,
                    pass_env=cfg.passEnv,
                    env=self._envs.get(s.id),
                    timeout_s=cfg.timeoutS,
                )
            except pool.SetupError as exc:
                event.update(exitCode=exc.code, output=exc.output, error=str(exc))
                self.store.append_transcript(s.id, event)
                raise AgentError(str(exc)) from None
            event.update(exitCode=code, output=output)
            self.store.append_transcript(s.id, event)

    def remote(self) -> Any:
        """The Ray executor (agent/executors/cluster.py): the daemon's, else one of our own."""
        if self._executor is None:
            from .executors.cluster import RayExecutor

            self._executor = RayExecutor()
        return self._executor

    async def _ask(self, s: Session, question: dict[str, Any]) -> str:
        """Put an agent's permission question on the session until :meth:`answer`."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._questions[s.id] = future
        s.question = question
        await self._save(s)
        try:
            return await future
        finally:
            self._questions.pop(s.id, None)
            s.question = None
            with anyio.CancelScope(shield=True):
                await self._save(s)

    def answer(self, session_id: str, option_id: str) -> Session:
        """Answer the permission question the session's agent is waiting on (an ``optionId`` of
        ``s.question["options"]``; anything else rejects)."""
        s = self.get(session_id)
        future = self._questions.get(session_id)
        if future is None or future.done():
            raise SessionError(f"session {s.id} has no question waiting")
        future.set_result(option_id)
        return s

    def _agent_started(self, s: Session, pid: int) -> None:
        s.agentPid = pid
        self.store.save(s)  # small and rare; a crash must find the pid

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

    async def _save(self, s: Session) -> None:
        await anyio.to_thread.run_sync(self.store.save, s)
        self._changed(s)

    async def wait(self, session_id: str) -> Session:
        """Until the session's current run is over."""
        task = self._tasks.get(session_id)
        if task is not None:
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():
                    raise
        return self.get(session_id)

    def cancel(self, session_id: str) -> Session:
        s = self.get(session_id)
        task = self._tasks.get(session_id)
        if task is not None and not task.done():
            task.cancel()
        elif s.state in ACTIVE:
            if pid_alive(s.pid) and s.pid != os.getpid():
                raise SessionError(f"session {s.id} runs in another process ({s.pid})")
            transition(s, State.CANCELLED)
            self.store.save(s)
            self._changed(s)
        return s

    def follow_up(
        self,
        session_id: str,
        instruction: str,
        *,
        config: Config | None = None,
        env: dict[str, str] | None = None,
    ) -> Session:
        """Run the agent again in the same worktree, with its conversation so far."""
        s = self.get(session_id)
        if s.state in ACTIVE:
            raise SessionError(f"session {s.id} is still {s.state.value}")
        if s.state in (State.APPLIED, State.DISCARDED) or not Path(s.worktree).exists():
            raise SessionError(
                f"session {s.id} is {s.state.value}; its worktree is gone, start a new session"
            )
        try:
            transition(s, State.QUEUED)
        except TransitionError as exc:
            raise SessionError(str(exc)) from None
        s.instruction = instruction
        s.pid = os.getpid()
        if config is not None:
            self._remember(s.id, config, env)
        self.store.append_transcript(s.id, {"type": "follow_up", "instruction": instruction})
        self._spawn(s, self._run(s))
        self._changed(s)
        return s

    def reject_changes(
        self, session_id: str, reverts: list[results.Revert], note: str = ""
    ) -> Session:
        """Take the changes the developer rejected out of a ready session's result: they are
        reverted in its worktree, which becomes the new result commit (blocking)."""
        s = self.get(session_id)
        if s.state is not State.READY:
            raise SessionError(f"session {s.id} is {s.state.value}, not ready: nothing to reject")
        worktree = Path(s.worktree)
        if not worktree.exists():
            raise SessionError(f"session {s.id} has no worktree any more: discard it")
        gitops.check_worktree_link(self.repo_root, worktree)
        try:
            results.revert(self.repo_root, worktree, s.baseCommit, s.resultCommit, reverts)
        except (results.RevertError, OSError) as exc:
            raise SessionError(
                f"could not reject that change of session {s.id}: {_message(exc)}"
            ) from None
        self._collect(s)
        self.store.append_transcript(
            s.id,
            {
                "type": "reject",
                "files": [r.path for r in reverts],
                "note": self.store.redactor.text(note),
            },
        )
        s.updatedAt = now_iso()
        self.store.save(s)
        self._changed(s)
        return s

    # -- results ----------------------------------------------------------------------
    def plan(self, session_id: str, read_current: Callable[[str], bytes | None]) -> list[FileMerge]:
        """Merge the session's result into the files as they are now (blocking).

        ``read_current(path)`` gives the current content of a repository-relative path:
        the open buffer if there is one, else the disk, None when it does not exist."""
        s = self.get(session_id)
        if s.state is not State.READY:
            raise not_ready(s)
        return results.plan(self.repo_root, s.baseCommit, s.resultCommit, read_current)

    def read_disk(self, path: str) -> bytes | None:
        try:
            return (self.repo_root / path).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def set_conflicts(self, session_id: str, count: int) -> Session:
        """How many places the result conflicts with the developer's files, as last merged."""
        s = self.get(session_id)
        s.conflicts = count
        self.store.save(s)
        self._changed(s)
        return s

    def set_hunks(self, session_id: str, count: int) -> Session:
        """How many changes of a ready session are left to review, as last merged."""
        s = self.get(session_id)
        if s.state is State.READY and s.hunks != count:
            s.hunks = count
            self.store.save(s)
            self._changed(s)
        return s

    def mark_applied(self, session_id: str) -> Session:
        """The result is in the developer's files: record it and remove the worktree."""
        s = self.get(session_id)
        transition(s, State.APPLIED)
        s.conflicts = 0
        self._cleanup(s)
        self.store.save(s)
        self._changed(s)
        return s

    def apply_to_disk(self, session_id: str, *, conflict_markers: bool = False) -> ApplyReport:
        """``handoff apply``: write clean merges into the working tree; a conflicted file is
        left untouched unless ``conflict_markers`` (blocking)."""
        plans = self.plan(session_id, self.read_disk)
        conflicts = [fm for fm in plans if fm.action == "conflict"]
        todo = [
            fm
            for fm in plans
            if fm.action not in ("conflict", "unchanged")
            or (fm.action == "conflict" and conflict_markers and fm.content is not None)
        ]
        try:
            results.write_all(self.repo_root, todo)
        except OSError as exc:
            raise SessionError(f"could not apply session {session_id}: {_message(exc)}") from None
        written = [fm.path for fm in todo]
        if conflicts and not conflict_markers:
            self.set_conflicts(session_id, len(conflicts))
        else:
            self.mark_applied(session_id)
        return ApplyReport(written=written, conflicts=conflicts)

    def discard(self, session_id: str) -> Session:
        """Drop the session and everything it left in git (blocking)."""
        s = self.get(session_id)
        if s.state in ACTIVE:
            raise SessionError(f"session {s.id} is {s.state.value}: cancel it first")
        if s.state is not State.DISCARDED:
            transition(s, State.DISCARDED)
        self._cleanup(s)
        self.store.save(s)
        self._changed(s)
        return s

    def _cleanup(self, s: Session) -> None:
        from .backends.acp import forget

        forget(s.id)  # an ACP agent kept for follow-ups
        if self._executor is not None:
            self._executor.forget(s.id)  # its Ray actor
        worktree = Path(s.worktree) if s.worktree else None
        if (
            worktree is not None
            and worktree == self.store.worktree_path(s.id)
            and worktree.is_dir()
        ):
            try:
                gitops.check_worktree_link(self.repo_root, worktree)
            except gitops.GitError:
                # An agent replaced its .git link: git would not know the folder as its
                # worktree any more. It is Handoff's own folder, so remove it directly.
                shutil.rmtree(worktree)
        with self._git_lock:
            gitops.remove_session(
                self.repo_root,
                worktree=Path(s.worktree) if s.worktree else None,
                branch=s.branch or f"handoff/{s.id}",
                ref_prefix=f"refs/handoff/{s.id}/",
            )

    def gc(self) -> list[str]:
        """Remove what crashed or finished sessions left in git (blocking)."""
        live = {
            s.id for s in self.sessions.values() if s.state not in (State.APPLIED, State.DISCARDED)
        }
        self.pool.clear()  # idle pooled worktrees; made again at the next delegation
        # every worktree of the repository shares its sessions' refs and branches: keep those
        # whose record (in any state folder) says they still hold work
        live |= unfinished_ids(self.store.root.parent.parent)
        for entry in gitops.worktrees(self.repo_root)[1:]:
            branch = entry.get("branch", "")
            sid = branch[len(f"refs/heads/{gitops.BRANCH_PREFIX}") :]
            if branch.startswith(f"refs/heads/{gitops.BRANCH_PREFIX}") and sid not in live:
                kill_processes_in(Path(entry["worktree"]))  # an agent a crash left running
        return gitops.gc(self.repo_root, keep=lambda sid: sid in live)

    def diff(self, session_id: str) -> str:
        s = self.get(session_id)
        if not s.resultCommit:
            return ""
        return gitops.diff_text(self.repo_root, s.baseCommit, s.resultCommit)

    async def close(self) -> None:
        """Stop every running session; they become ``interrupted`` and can be resumed."""
        self._closing = True
        await anyio.to_thread.run_sync(self.pool.stop)
        tasks = [t for t in self._tasks.values() if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        from .backends.acp import release

        for sid in list(self.sessions):
            await release(sid)


def _ended(s: Session) -> float:
    """When a finished session last changed (epoch seconds); now if its record does not say."""
    try:
        return parse_iso(s.updatedAt)
    except (TypeError, ValueError):
        return time.time()
