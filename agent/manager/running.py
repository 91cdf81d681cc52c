"""Running sessions: delegate (queued at once, snapshot and worktree in worker threads),
the agent's pass (``maxParallel`` at once), follow-ups, permission questions, cancel,
and stopping them all when the daemon stops."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
from handoff.text import title_of

from .. import gitops, pool
from ..backends.base import AgentContext, AgentError
from ..brief import Origin, build_brief
from ..config import Config
from ..keptindex import KeptIndex
from ..processes import pid_alive
from ..session import (
    ACTIVE,
    Session,
    SessionError,
    State,
    TransitionError,
    new_id,
    transition,
)
from .base import ManagerBase, _message
from .requests import DelegateRequest

log = logging.getLogger(__name__)


GUIDES = ("AGENTS.md", "CLAUDE.md")


PREPARE_THREADS = 2  # snapshots prepared at once (per repository)


def _worktree_gone(worktree: Path) -> str:
    return (
        f"the session's worktree {worktree} was deleted while the agent ran; there is no "
        "result to collect (discard the session to clean up)"
    )


class Running(ManagerBase):
    def start_pool(self) -> None:
        """Keep ``pool.size`` idle worktrees ready for this repository's sessions, and a split
        copy of its index for snapshots to start from (the daemon calls it; blocking: first
        removes what a crash left half-made in the pool folder)."""
        self._pool_on = True
        self.pool.recover()
        self.pool.ensure(self.config.pool.size)
        if self.kept is None:
            self.kept = KeptIndex(self.repo_root, self.store.index_path)
        self.kept.refresh_soon()

    def _spawn(self, s: Session, coro: Coroutine[Any, Any, None]) -> None:
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
            from ..presets import AgentUnavailable, check_agent

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

    async def _first_run(self, s: Session, req: DelegateRequest) -> None:
        async def prepare() -> None:
            # Snapshots on their own few threads: a burst of delegations neither runs dozens of
            # `git add -A` at once nor queues the server's quick thread hops behind them.
            if self._prepare_limiter is None:
                self._prepare_limiter = anyio.CapacityLimiter(PREPARE_THREADS)
            # An agent slot is free: its worktree is readied while the snapshot is taken.
            early = self._limiter is None or self._limiter.available_tokens > 0
            await anyio.to_thread.run_sync(
                self._prepare, s, req, early, limiter=self._prepare_limiter
            )

        try:
            await self._run(s, prepare)
        finally:
            ready = self._early.pop(s.id, None)  # readied early, but no agent ran there
            if ready is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self.pool.drop, ready)

    def _prepare(self, s: Session, req: DelegateRequest, early: bool = False) -> None:
        """Snapshot what the developer sees and write the brief (worker thread); with ``early``,
        the session's worktree is readied beside it (``Pool.early``: a pooled one made pristine,
        else a checkout of HEAD)."""
        ready = None
        if early:
            cfg = self.config_of(s)
            ready = self._early[s.id] = self.pool.early(
                use_pool=self._pool_on and cfg.pool.size > 0
            )
        # the origin file (unless its buffer came along) and the guides, read beside the ref
        wanted = list(GUIDES)
        if req.file and req.file not in req.overlays:
            wanted.append(req.file)
        t0 = time.monotonic()
        try:
            self.store.save(s)
            with self.kept.use() if self.kept else contextlib.nullcontext() as start:
                snap = gitops.take_snapshot(
                    self.repo_root,
                    ref=f"refs/handoff/{s.id}/base",
                    overlays=req.overlays,
                    message=f"handoff {s.id}: snapshot\n\n{s.title}",
                    read=wanted,
                    added=ready.go.set if ready is not None else None,
                    committed=(
                        functools.partial(self._aim, s, ready) if ready is not None else None
                    ),
                    start=start,
                )
        finally:
            if ready is not None:
                ready.go.set()  # also when it failed early
        s.baseCommit, found = snap.commit, snap.blobs
        log.info("%s: snapshot in %.3f s", s.id, time.monotonic() - t0)
        text = None
        if req.file:
            data = req.overlays.get(req.file, found.get(req.file))
            text = data.decode("utf-8", "replace") if data is not None else None
        guide = None
        for name in GUIDES:
            data = found[name]
            if data is not None:
                guide = (name, data.decode("utf-8", "replace"))
                break
        brief = build_brief(
            req.instruction,
            Origin(file=req.file, range=req.range, text=text, diagnostics=req.diagnostics),
            test_command=self.config_of(s).testCommand,
            guide=guide,
            submodules=snap.submodules,
        )
        self.store.write_brief(s.id, brief)
        self.store.save(s)

    def _aim(self, s: Session, ready: pool.Early, commit: str) -> None:
        """The worktree readied beside the snapshot becomes the session's, at its snapshot, in
        its own thread while the brief is written (``Pool.aim``)."""
        self.pool.aim(ready, Path(s.worktree), branch=s.branch, commit=commit)

    async def _run(self, s: Session, prepare: Callable[[], Awaitable[None]] | None = None) -> None:
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
        if s.id in self._early or not worktree.exists():  # readied early: it may be there now
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
        worktree add``; then ``worktree.include`` and ``worktree.setup`` (worker thread)."""
        cfg = self.config_of(s)
        worktree = Path(s.worktree)
        use_pool = self._pool_on and cfg.pool.size > 0
        ready = self._early.pop(s.id, None)
        early = ready is not None and self.pool.take_early(
            ready, worktree, branch=s.branch, commit=s.baseCommit
        )
        taken = (early and ready is not None and ready.pooled) or (
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
            from ..executors.cluster import RayExecutor

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

    async def close(self) -> None:
        """Stop every running session; they become ``interrupted`` and can be resumed."""
        self._closing = True
        await anyio.to_thread.run_sync(self.pool.stop)
        if self.kept is not None:
            await anyio.to_thread.run_sync(self.kept.close)
        tasks = [t for t in self._tasks.values() if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        from ..backends.acp import release

        for sid in list(self.sessions):
            await release(sid)
