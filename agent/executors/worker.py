"""The cluster's side of ``executor = "ray"``: what runs in Ray actors, on the workers.

Snapshot and result travel as git bundles, each thin against what the other side holds:

- :class:`RepoCache` (one named, detached actor per repository, no CPU) keeps a bare
  repository on its node with every commit shipped to the cluster; the daemon asks it what it
  has (:meth:`haves`) and sends only the objects it lacks.
- :class:`SessionActor` (one per session, ``ray.numCpus`` CPUs) keeps a bare repository per node
  (shared by the sessions on that node, under a lock), fetches from the cache what the node
  lacks, checks the session's start commit out in its own worktree there, runs the agent
  (the built-in one, litellm on the worker; or a command / ACP agent installed there), streams
  progress and transcript events back, commits the result and returns it as a bundle thin
  against the start commit. Follow-ups come to the same actor while it lives.

Every folder is under ``$HANDOFF_RAY_WORKDIR`` (default: ``<tmp>/handoff-ray-<uid>``) on the
worker's machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from .. import gitops

# the ref every shipped commit of a session is kept under, on both sides
START = "refs/handoff/{sid}/start"
RESULT = "refs/handoff/{sid}/result"
HAVES = 64  # most recent commits a repository advertises as already held


def workdir() -> Path:
    return Path(
        os.environ.get("HANDOFF_RAY_WORKDIR")
        or Path(tempfile.gettempdir()) / f"handoff-ray-{os.getuid()}"
    )


def git(cwd: Path, *args: str, stdin: bytes | None = None) -> bytes:
    return gitops._run(cwd, *args, stdin=stdin, env=gitops.IDENTITY).stdout


def make_bundle(repo: Path, ref: str, haves: list[str]) -> bytes | None:
    """The objects of ``ref`` that ``haves`` lack, as a bundle (None: nothing is lacking)."""
    proc = gitops._run(
        repo, "bundle", "create", "-q", "-", ref, *(f"^{h}" for h in haves), check=False
    )
    if proc.returncode != 0:
        if b"empty bundle" in proc.stderr:
            return None
        raise gitops.GitError(f"git bundle failed in {repo}: {os.fsdecode(proc.stderr).strip()}")
    return proc.stdout


def fetch_bundle(repo: Path, data: bytes, refspec: str) -> None:
    """Take the objects and refs of bundle ``data`` into ``repo``."""
    with tempfile.NamedTemporaryFile(dir=repo, prefix="in-", suffix=".bundle") as f:
        f.write(data)
        f.flush()
        git(repo, "fetch", "-q", "--no-write-fetch-head", f.name, refspec)


def present(repo: Path, shas: list[str]) -> list[str]:
    """Those of ``shas`` that are commits in ``repo``."""
    if not shas:
        return []
    out = git(
        repo,
        "cat-file",
        "--batch-check=%(objectname) %(objecttype)",
        stdin="".join(f"{s}\n" for s in shas).encode(),
    )
    return [
        parts[0]
        for parts in (line.split() for line in out.decode().splitlines())
        if len(parts) == 2 and parts[1] == "commit"
    ]


class BareRepo:
    """A bare repository holding what was shipped for one repository (cache or node copy)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.locked():
            if not (path / "HEAD").exists():
                path.mkdir(exist_ok=True)
                git(path, "init", "-q", "--bare")
                git(path, "config", "gc.auto", "0")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with open(str(self.path) + ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def haves(self) -> list[str]:
        out = git(
            self.path,
            "for-each-ref",
            "--sort=-committerdate",
            f"--count={HAVES}",
            "--format=%(objectname)",
            "refs/handoff/",
        )
        return sorted(set(out.decode().split()))

    def has(self, sha: str) -> bool:
        return bool(present(self.path, [sha]))

    def take(self, data: bytes | None, ref: str) -> None:
        if data is not None:
            with self.locked():
                fetch_bundle(self.path, data, f"+{ref}:{ref}")

    def bundle(self, ref: str, haves: list[str]) -> bytes | None:
        return make_bundle(self.path, ref, present(self.path, haves))


class RepoCache:
    """The cluster's copy of one repository's shipped commits (a named, detached actor)."""

    def __init__(self, key: str) -> None:
        self.repo = BareRepo(workdir() / "cache" / f"{key}.git")

    def haves(self) -> list[str]:
        return self.repo.haves()

    def take(self, data: bytes | None, ref: str) -> None:
        self.repo.take(data, ref)

    def bundle(self, ref: str, haves: list[str]) -> bytes | None:
        return self.repo.bundle(ref, haves)


class SessionActor:
    """One session on the cluster: its worktree on this worker and the agent's runs there."""

    def __init__(self, key: str, sid: str) -> None:
        self.sid = sid
        self.repo = BareRepo(workdir() / "repos" / f"{key}.git")
        self.worktree = workdir() / "worktrees" / sid
        self.session_dir = workdir() / "sessions" / sid

    def where(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        return {
            "node": ctx.get_node_id(),
            "host": socket.gethostname(),
            "ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
            "worktree": str(self.worktree),
        }

    async def _checkout(self, cache: Any, start: str) -> None:
        ref = START.format(sid=self.sid)
        if not await asyncio.to_thread(self.repo.has, start):
            data = await cache.bundle.remote(ref, await asyncio.to_thread(self.repo.haves))
            await asyncio.to_thread(self.repo.take, data, ref)

        def checkout() -> None:
            with self.repo.locked():
                if (self.worktree / ".git").exists():
                    git(self.worktree, "reset", "-q", "--hard", start)
                    git(self.worktree, "clean", "-q", "-fdx")
                else:
                    shutil.rmtree(self.worktree, ignore_errors=True)
                    self.worktree.parent.mkdir(parents=True, exist_ok=True)
                    git(self.repo.path, "worktree", "prune")
                    git(
                        self.repo.path,
                        "worktree",
                        "add",
                        "-q",
                        "-f",
                        "-B",
                        f"handoff/{self.sid}",
                        str(self.worktree),
                        start,
                    )

        await asyncio.to_thread(checkout)

    async def run(self, cache: Any, spec: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """One agent run: yields ``{"t": "where" | "progress" | "record", ...}`` events, then
        one ``{"t": "done", ...}`` or ``{"t": "error", ...}``."""
        from ..backends.base import AgentContext, AgentError, LimitReached
        from ..manager import make_backend

        yield {"t": "where", **self.where()}
        start = spec["start"]
        await self._checkout(cache, start)
        self.session_dir.mkdir(parents=True, exist_ok=True)
        brief_path = self.session_dir / "task.md"
        brief_path.write_text(spec["brief"], encoding="utf-8")
        os.environ.update(spec["env"])  # the variables that travelled (this actor's process only)
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        config = spec["config"]
        ctx = AgentContext(
            session_id=self.sid,
            worktree=self.worktree,
            instruction=spec["instruction"],
            brief=spec["brief"],
            brief_path=brief_path,
            config=config,
            env=dict(os.environ),
            file=spec["file"],
            range=spec["range"],
            history=spec["history"],
            record=lambda event: events.put_nowait({"t": "record", "event": event}),
            progress=lambda m, steps, cost: events.put_nowait(
                {"t": "progress", "message": m, "steps": steps, "cost": cost}
            ),
        )
        backend = make_backend(spec["agent"], config)
        task = asyncio.ensure_future(backend.run(ctx))
        while not task.done() or not events.empty():
            getter = asyncio.ensure_future(events.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()
        result = await asyncio.to_thread(self._commit, spec)
        ref = RESULT.format(sid=self.sid)
        data = await asyncio.to_thread(make_bundle, self.repo.path, ref, [start])
        await cache.take.remote(data, ref)  # a later actor starts from it without a new upload
        try:
            outcome = task.result()
        except AgentError as exc:
            yield {
                "t": "error",
                "message": str(exc),
                "limit": isinstance(exc, LimitReached),
                "steps": exc.steps,
                "cost": exc.cost_usd,
                "result": result,
                "bundle": data,
            }
            return
        yield {
            "t": "done",
            "summary": outcome.summary,
            "steps": outcome.steps,
            "cost": outcome.cost_usd,
            "messages": outcome.messages,
            "result": result,
            "bundle": data,
        }

    def _commit(self, spec: dict[str, Any]) -> str:
        result = gitops.commit_worktree(
            self.worktree, f"handoff {self.sid}: result", exclude=spec["exclude"]
        )
        with self.repo.locked():
            git(self.repo.path, "update-ref", RESULT.format(sid=self.sid), result)
        return result
