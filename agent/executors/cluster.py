"""The daemon's side of ``executor = "ray"``: one link to a Ray cluster, and the backend that
ships a session there (agent/executors/worker.py is the cluster's side).

What travels to the cluster: the objects of the session's start commit that the cluster's
per-repository cache lacks (a thin git bundle), the brief, the instruction and origin, the
conversation so far (follow-ups), the effective configuration (the model's key included, as a
call argument: never in Ray's runtime env, which its dashboard shows) and the values of the
variables ``passEnv`` (top level and the agent's) names; nothing else of the developer's
environment. What comes back: progress and transcript events, the outcome and the result
commit as a bundle thin against the start, fetched into ``refs/handoff/<id>/result``; the
session's local worktree (the review copy: hunk review, apply and follow-ups see it as with the
local executor) is moved to it. The agent never runs in it.

``ray`` is imported only here, lazily, in worker threads, when a session asks for the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from .. import gitops
from ..backends.base import AgentContext, AgentError, LimitReached, Outcome
from ..config import Config
from . import ClusterError, WorkerLost
from .worker import RESULT, START, fetch_bundle, make_bundle, present

if TYPE_CHECKING:
    from ..manager import SessionManager
    from ..session import Session

log = logging.getLogger(__name__)

NAMESPACE = "handoff"
CONNECT_TIMEOUT_S = 5.0  # a TCP connect to the head, before Ray is even imported
DEFAULT_PORTS = {"ray": 10001, "": 6379}  # Ray Client, the GCS
KEEP_IDLE = 4  # actors kept alive after their run, for follow-ups (they hold their CPUs)
IDLE_S = 600.0  # an idle actor older than this is ended


def address_of(config: Config) -> str:
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ClusterError(
            'executor = "ray" needs `ray.address`: the HOST:PORT of the cluster\'s head '
            "(or ray://HOST:PORT for Ray Client)"
        )
    return address


def _host_port(address: str) -> tuple[str, int]:
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.rpartition(":")
    if not host:
        host, port = rest, ""
    try:
        return host.strip("[]"), int(port) if port else DEFAULT_PORTS.get(scheme, 6379)
    except ValueError:
        raise ClusterError(f"`ray.address` {address} is not HOST:PORT") from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def repo_key(repo_root: Path) -> str:
    """The cluster's name for a repository (one cache actor each): its folder name and a hash of
    the machine, the user and the path."""
    ident = f"{socket.gethostname()}:{os.getuid()}:{Path(repo_root).resolve()}"
    return f"{Path(repo_root).name[:40]}-{hashlib.sha1(ident.encode()).hexdigest()[:10]}"


def travelling_env(config: Config, agent: str, env: dict[str, str] | None) -> dict[str, str]:
    """The variables that go to the cluster: those ``passEnv`` names (and the agent's)."""
    base = os.environ if env is None else env
    spec = config.agent_spec(agent)
    names = [*config.passEnv, *(spec.passEnv if spec else ())]
    return {n: base[n] for n in names if n in base}


class RayExecutor:
    """The daemon's connection to one cluster and the actors of its sessions."""

    def __init__(self) -> None:
        self.address: str | None = None
        self.cluster: dict[str, Any] = {}  # what status shows: nodes, CPUs
        self.remote: dict[str, dict[str, Any]] = {}  # session id -> where it runs (node, pid)
        self._ray: Any = None
        self._lock = threading.Lock()
        self._actors: dict[str, Any] = {}
        self._idle: dict[str, float] = {}  # session id -> when its actor's last run ended
        self._running: set[str] = set()
        self._placed: set[str] = set()  # running sessions whose actor got its worker
        self._cpus: dict[str, float] = {}

    # -- the connection (blocking: worker threads) ----------------------------------------
    def connect(self, address: str) -> Any:
        with self._lock:
            if self._ray is not None and self.address == address:
                return self._ray
            if self._ray is not None:
                if self._running:
                    raise ClusterError(
                        f"the daemon runs sessions on the Ray cluster at {self.address}; it can "
                        f"use {address} once they ended (or after `handoff daemon stop`)"
                    )
                self._shutdown()
            host, port = _host_port(address)
            try:
                socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
            except OSError as exc:
                raise ClusterError(
                    f"cannot reach the Ray cluster at {address}: "
                    f"{exc.strerror or first_line(exc)}; nothing was started"
                ) from None
            try:
                import ray
            except ImportError:
                raise ClusterError(
                    'executor = "ray" needs Ray in the daemon\'s environment: '
                    'pip install "handoff-lsp[ray]"'
                ) from None
            try:
                ray.init(
                    address=address,
                    namespace=NAMESPACE,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    configure_logging=False,
                )
                nodes = [n for n in ray.nodes() if n.get("Alive")]
                self.cluster = {
                    "nodes": len(nodes),
                    "cpus": ray.cluster_resources().get("CPU", 0),
                }
            except Exception as exc:  # Ray's errors are many; the user needs the first line
                with contextlib.suppress(Exception):
                    ray.shutdown()
                raise ClusterError(
                    f"cannot use the Ray cluster at {address}: {first_line(exc)}"
                ) from None
            self._ray, self.address = ray, address
            log.info("connected to the Ray cluster at %s (%s)", address, self.cluster)
            return ray

    async def check(self, config: Config) -> None:
        """Connect (once) to the cluster ``config`` names; ClusterError at once when it cannot."""
        address = address_of(config)
        await anyio.to_thread.run_sync(self.connect, address)

    def _shutdown(self) -> None:
        if self._ray is not None:
            with contextlib.suppress(Exception):
                self._ray.shutdown()
        self._ray, self.address, self._actors, self.cluster = None, None, {}, {}

    async def close(self) -> None:
        if self._ray is not None:
            await anyio.to_thread.run_sync(self._shutdown)

    def status(self) -> dict[str, Any]:
        """For ``handoff daemon status``: no Ray call (the status answers at once)."""
        return {
            "executor": "ray" if self._ray is not None else "local",
            "cluster": self.address,
            **self.cluster,
            "remote": {sid: dict(w) for sid, w in self.remote.items()},
        }

    # -- actors ---------------------------------------------------------------------------
    def forget(self, sid: str) -> None:
        """The session ended for good (applied, discarded): end its actor."""
        self.remote.pop(sid, None)
        self._idle.pop(sid, None)
        self._kill(sid)

    def _kill(self, sid: str) -> None:
        actor = self._actors.pop(sid, None)
        if actor is not None and self._ray is not None:
            with contextlib.suppress(Exception):
                self._ray.kill(actor, no_restart=True)

    def make_room(self, cpus: float = 0.0) -> None:
        """Idle actors never starve a session: end them (oldest first) while a session of ours
        waits for a worker, or until ``cpus`` are free (blocking: a Ray call)."""
        if not self._idle:
            return
        free = 0.0
        if cpus:
            with contextlib.suppress(Exception):
                free = self._ray.available_resources().get("CPU", 0.0)
        waiting = any(sid not in self._placed for sid in self._running)
        for sid, _ in sorted(self._idle.items(), key=lambda kv: kv[1]):
            if not waiting and free >= cpus:
                break
            del self._idle[sid]
            free += self._cpus.pop(sid, 0.0)
            self._kill(sid)

    def _sweep(self) -> None:
        """Idle actors hold their CPUs: keep the few most recent ones, for a while."""
        now = time.monotonic()
        idle = sorted(self._idle.items(), key=lambda kv: kv[1], reverse=True)
        for i, (sid, ended) in enumerate(idle):
            if i >= KEEP_IDLE or now - ended > IDLE_S:
                del self._idle[sid]
                self._kill(sid)

    def actor(self, ray: Any, key: str, sid: str, config: Config) -> Any:
        from .worker import SessionActor

        self._idle.pop(sid, None)
        self._sweep()
        actor = self._actors.get(sid)
        if actor is None:
            self.make_room(config.ray.numCpus)
            self._cpus[sid] = config.ray.numCpus
            options: dict[str, Any] = {"num_cpus": config.ray.numCpus, "max_restarts": 0}
            if config.ray.memoryMb:
                options["memory"] = config.ray.memoryMb * 1024 * 1024
            if config.ray.runtimeEnv:
                options["runtime_env"] = config.ray.runtimeEnv
            actor = ray.remote(SessionActor).options(**options).remote(key, sid)
            self._actors[sid] = actor
        return actor

    def cache(self, ray: Any, key: str) -> Any:
        from .worker import RepoCache

        return (
            ray.remote(RepoCache)
            .options(
                name=f"cache-{key}",
                namespace=NAMESPACE,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=0,
                max_restarts=-1,
            )
            .remote(key)
        )

    def backend(self, mgr: SessionManager, s: Session) -> RayBackend:
        return RayBackend(self, mgr, s)


class RayBackend:
    """A :class:`~handoff.agent.backends.base.Backend` that runs the session's agent on the
    cluster and leaves its result in the session's local worktree."""

    def __init__(self, executor: RayExecutor, mgr: SessionManager, s: Session) -> None:
        self.executor = executor
        self.mgr = mgr
        self.s = s
        self.name = s.agent

    async def run(self, ctx: AgentContext) -> Outcome:
        ex, s = self.executor, self.s
        ray = await anyio.to_thread.run_sync(ex.connect, address_of(ctx.config))
        start = s.resultCommit or s.baseCommit
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        spec = {
            "start": start,
            "agent": s.agent,
            "instruction": ctx.instruction,
            "brief": ctx.brief,
            "config": ctx.config,
            "env": travelling_env(ctx.config, s.agent, ctx.env),
            "file": ctx.file,
            "range": ctx.range,
            "history": ctx.history,
            "exclude": ctx.config.exclude_for(s.agent),
        }
        ex._running.add(s.id)
        stop = threading.Event()
        thread = threading.Thread(
            target=self._stream,
            args=(ray, spec, loop, events, stop),
            daemon=True,
            name=f"handoff-ray-{s.id}",
        )
        try:
            thread.start()
            while True:
                ev = await events.get()
                kind = ev["t"]
                if kind == "where":
                    ex._placed.add(s.id)
                    where = {k: ev[k] for k in ("node", "ip", "host", "pid", "worktree")}
                    ex.remote.setdefault(s.id, {}).update(where)
                    ctx.record({"type": "remote", "cluster": ex.address, **where})
                    ctx.progress(
                        f"running on {ev['ip']} (Ray node {ev['node'][:8]})", s.steps, s.costUsd
                    )
                elif kind == "record":
                    ctx.record(ev["event"])
                elif kind == "progress":
                    ctx.progress(ev["message"], ev["steps"], ev["cost"])
                elif kind in ("done", "error"):
                    await anyio.to_thread.run_sync(self._take_result, ev)
                    if kind == "error":
                        cls = LimitReached if ev["limit"] else AgentError
                        raise cls(ev["message"], steps=ev["steps"], cost_usd=ev["cost"])
                    return Outcome(ev["summary"], ev["steps"], ev["cost"], ev["messages"])
                elif kind == "lost":
                    raise WorkerLost(ev["message"], steps=s.steps, cost_usd=s.costUsd)
                else:  # "failed": Ray or the cluster-side code broke
                    raise AgentError(ev["message"], steps=s.steps, cost_usd=s.costUsd)
        except asyncio.CancelledError:
            stop.set()
            ex._kill(s.id)  # cancel (or the daemon stops): the actor and its agent end
            raise
        finally:
            ex._running.discard(s.id)
            ex._placed.discard(s.id)
            if s.id in ex._actors:
                ex._idle[s.id] = time.monotonic()
            if ex._idle and any(sid not in ex._placed for sid in ex._running):
                ex.make_room()  # a session waits for a worker: idle actors go first

    def _stream(
        self,
        ray: Any,
        spec: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
        events: asyncio.Queue[dict[str, Any]],
        stop: threading.Event,
    ) -> None:
        """Ship the start commit, run the actor and relay its events (worker thread)."""
        ex, s = self.executor, self.s

        def put(ev: dict[str, Any]) -> None:
            if not stop.is_set():
                loop.call_soon_threadsafe(events.put_nowait, ev)

        where = ""
        try:
            key = repo_key(self.mgr.repo_root)
            cache = ex.cache(ray, key)
            self._ship(ray, cache, spec["start"])
            actor = ex.actor(ray, key, s.id, spec["config"])
            for ref in actor.run.remote(cache, spec):
                ev = ray.get(ref)
                if ev["t"] == "where":
                    where = f" on {ev['ip']} (Ray node {ev['node'][:12]}, pid {ev['pid']})"
                put(ev)
                if ev["t"] in ("done", "error"):
                    return
            put({"t": "failed", "message": f"the Ray actor{where} ended without a result"})
        except Exception as exc:
            if stop.is_set():
                return
            ex._actors.pop(s.id, None)
            from ray.exceptions import (
                ActorDiedError,
                ActorUnavailableError,
                NodeDiedError,
                ObjectLostError,
                OwnerDiedError,
                WorkerCrashedError,
            )

            lost = (
                ActorDiedError,
                ActorUnavailableError,
                NodeDiedError,
                WorkerCrashedError,
                ObjectLostError,
                OwnerDiedError,
            )
            if isinstance(exc, lost):
                put(
                    {
                        "t": "lost",
                        "message": (
                            f"the Ray worker running this session{where} was lost mid-run "
                            f"({first_line(exc)}); resume it (`handoff resume {s.id}`) to run "
                            "again from its last result"
                        ),
                    }
                )
            elif isinstance(exc, (gitops.GitError, OSError)):
                put({"t": "failed", "message": f"shipping the session to {ex.address}: {exc}"})
            else:
                put(
                    {
                        "t": "failed",
                        "message": f"on the Ray cluster at {ex.address}{where}: {first_line(exc)}",
                    }
                )

    def _ship(self, ray: Any, cache: Any, start: str) -> None:
        """Send the cache the objects of ``start`` it lacks (a bundle thin against its haves)."""
        root, ref = self.mgr.repo_root, START.format(sid=self.s.id)
        gitops._run(root, "update-ref", ref, start)
        haves = present(root, ray.get(cache.haves.remote()))
        data = make_bundle(root, ref, haves)
        ray.get(cache.take.remote(data, ref))
        self.executor.remote.setdefault(self.s.id, {})["shipped"] = len(data or b"")

    def _take_result(self, ev: dict[str, Any]) -> None:
        """The result commit into the session's refs and its local worktree (worker thread)."""
        root, sid = self.mgr.repo_root, self.s.id
        result = ev["result"]
        if ev["bundle"] is not None:
            fetch_bundle(
                Path(gitops._out(root, "rev-parse", "--absolute-git-dir")),
                ev["bundle"],
                f"+{RESULT.format(sid=sid)}:{RESULT.format(sid=sid)}",
            )
        if not present(root, [result]):
            raise gitops.GitError(f"the cluster's result {result} did not arrive")
        worktree = Path(self.s.worktree)
        gitops.check_worktree_link(root, worktree)
        gitops._run(worktree, "reset", "-q", "--hard", result)
