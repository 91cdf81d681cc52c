"""Repositories the server works in, and its mirror of their sessions (owned by the daemon).

The sessions belong to the session daemon (``handoff daemon``); this front keeps a mirror of the
sessions of its repositories, updated by the daemon's ``session`` notifications, so code actions,
diagnostics and the session list never wait on a round trip. A workspace folder (multi-root: each
of them) or a delegated file leads to its repository: the daemon finds the root (git runs there,
not here) and subscribes this server to its sessions.

If the daemon goes away (stopped, killed), the front says so once, starts a new one and opens its
repositories again; the mirror then says what the new daemon found.

Also here: what the developer sees of a repository: the open documents (uri, text, version) and
the ones whose text differs from the disk (the overlays of a snapshot).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from handoff.agent import protocol
from handoff.agent.client import DaemonClient, RemoteError
from handoff.agent.protocol import Session, SessionError
from handoff.text import clip
from handoff.uris import path_of
from lsprotocol import types

from .edits import OpenDoc

if TYPE_CHECKING:
    from .server import HandoffServer

log = logging.getLogger(__name__)
RECONNECT_TRIES = 3


class NotInRepository(Exception):
    """The file is not inside a git repository (or is not a file at all)."""


@dataclasses.dataclass
class Repo:
    root: Path
    sessions: dict[str, Session] = dataclasses.field(default_factory=dict)

    def relative(self, path: Path) -> str | None:
        """``path`` relative to the root (posix), None when it is outside."""
        for base in (self.root, self.root.resolve()):
            for p in (path, path.resolve()):
                try:
                    return p.relative_to(base).as_posix()
                except ValueError:
                    continue
        return None

    def read_disk(self, path: str) -> bytes | None:
        """The file ``path`` of the working tree as it is on disk (blocking); None when absent."""
        try:
            return (self.root / path).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None


def _inside_any(path: Path, folders: list[Path]) -> bool:
    """``path`` is in one of ``folders`` (as given or with symlinks resolved; blocking)."""
    for p in (path, path.resolve()):
        for f in folders:
            for base in (f, f.resolve()):
                if p == base or base in p.parents:
                    return True
    return False


PATH_LIMIT = 200  # characters of a path or uri in a message


class Repos:
    def __init__(self, ls: HandoffServer) -> None:
        self.ls = ls
        self._repos: dict[Path, Repo] = {}
        # the other worktrees of those repositories (`git worktree add`), by root: their
        # sessions are listed too (the daemon keys sessions by repository, not by worktree)
        self._others: dict[Path, Repo] = {}
        self._root_of_dir: dict[Path, Path] = {}
        self._finding: dict[Path, asyncio.Task[Path]] = {}  # root lookups under way, by folder
        self.discovered = asyncio.Event()
        self.daemon = DaemonClient(
            name="handoff-lsp", on_session=self._on_session, on_progress=self._on_progress
        )
        self._connecting: asyncio.Task[None] | None = None
        self._closing = False
        self._watch: asyncio.Task[None] | None = None

    def roots(self) -> list[Path]:
        return list(self._repos)

    def get(self, root: Path) -> Repo | None:
        return self._repos.get(root)

    # -- the daemon ------------------------------------------------------------------------
    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """A request to the daemon (connected, or started, first); its errors as RemoteError."""
        await self.connected()
        return await self.daemon.call(method, params)

    async def connected(self) -> None:
        if self.daemon.connected:
            return
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        await asyncio.shield(self._connecting)

    async def _connect(self) -> None:
        await self.daemon.connect()
        info = self.daemon.info
        log.info(
            "session daemon pid %s (%s)",
            info.get("pid") if info else None,
            "started" if self.daemon.started else "running",
        )
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._watch_daemon())

    async def _watch_daemon(self) -> None:
        """When the daemon goes away: say so once, start a new one, open the repositories again
        (and watch the new one the same way)."""
        while True:
            await self.daemon.lost.wait()
            if self._closing or self.ls.is_closing:
                return
            log.warning("the session daemon went away")
            self.ls.show(
                "Handoff: the session daemon stopped; starting a new one (sessions that were "
                "running are interrupted and can be resumed).",
                types.MessageType.Warning,
            )
            for attempt in range(RECONNECT_TRIES):
                try:
                    await self.daemon.close()
                    await self.connected()
                    for root in list(self._repos):
                        await self._open(root)
                    break
                except (RemoteError, OSError) as exc:
                    log.warning(
                        "reconnecting to the session daemon failed (%d): %s", attempt + 1, exc
                    )
                    await asyncio.sleep(0.5 * (attempt + 1))
            else:
                self.ls.show(
                    "Handoff: no session daemon could be started; see `handoff daemon logs`.",
                    types.MessageType.Error,
                )
                return

    def _on_session(self, wire: dict[str, Any]) -> None:
        try:
            new = Session.from_dict(wire)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("a session the daemon sent could not be read: %s", exc)
            return
        self._merge(self._home(new), new)

    def _home(self, s: Session) -> Repo:
        """The mirror's repository of ``s``: its worktree, opened here or not (the daemon sends
        only the sessions of repositories this front opened)."""
        root = Path(s.repoRoot)
        repo = self._repos.get(root) or self._others.get(root)
        if repo is None:
            repo = self._others[root] = Repo(root)
        return repo

    def _all(self) -> list[Repo]:
        return [*self._repos.values(), *self._others.values()]

    def check_applies_here(self, repo: Repo, s: Session) -> None:
        """A session of a worktree this editor did not open is applied there, not here."""
        if repo.root not in self._repos:
            raise SessionError(
                f"session {s.id} was started in the worktree {repo.root}, which is not open "
                f"here: apply it there (open that folder, or `handoff apply {s.id}` in it); "
                "show, follow-up and discard work from here"
            )

    def _merge(self, repo: Repo, new: Session) -> Session:
        """Take the daemon's word for ``new`` into the mirror (the same object is updated, so
        whoever holds it sees the change); announced to the status."""
        old = repo.sessions.get(new.id)
        if old is None:
            repo.sessions[new.id] = new
            s = new
        else:
            for f in dataclasses.fields(Session):
                value = getattr(new, f.name)
                if getattr(old, f.name) != value:
                    setattr(old, f.name, value)
            s = old
        self.ls.status.on_change(s)
        return s

    def _on_progress(self, params: dict[str, Any]) -> None:
        sid = params.get("sessionId")
        for repo in self._all():
            s = repo.sessions.get(sid)  # type: ignore[arg-type]
            if s is not None:
                s.steps = int(params.get("steps") or 0)
                s.costUsd = float(params.get("costUsd") or 0.0)
                self.ls.status.on_progress(s, str(params.get("message") or ""))
                return

    def adopt(self, wire: dict[str, Any]) -> Session:
        """A session a request answered with (it may arrive before its notification)."""
        new = Session.from_dict(wire)
        return self._merge(self._home(new), new)

    # -- finding ---------------------------------------------------------------------------
    async def for_path(self, path: Path, *, folder: bool = False) -> Repo:
        """The repository of the file (or, with ``folder``, the folder) ``path``."""
        key = path if folder else path.parent
        root = self._root_of_dir.get(key)
        if root is None:
            # Concurrent callers (a burst of delegations from one folder) share one lookup.
            task = self._finding.get(key)
            if task is None:
                task = asyncio.get_running_loop().create_task(self._find_root(key, path))
                self._finding[key] = task
            root = await asyncio.shield(task)
        return self._repos[root]

    async def _find_root(self, key: Path, path: Path) -> Path:
        try:
            root = await self._open(path)
        except RemoteError as exc:
            if exc.code == protocol.NOT_A_REPOSITORY:
                raise NotInRepository(
                    f"{clip(path, PATH_LIMIT)} is not inside a git repository. Handoff runs agents in "
                    "git worktrees: run `git init` there (or open a file of a repository) and try again."
                ) from None
            raise
        finally:
            self._finding.pop(key, None)  # a failure is not kept: the next call looks again
        self._root_of_dir[key] = root
        return root

    async def _open(self, path: Path) -> Path:
        """Ask the daemon for the repository of ``path`` and its sessions; mirror them."""
        result = await self.call(protocol.OPEN_REPO, {"path": str(path)})
        root = Path(result["root"])
        repo = self._repos.get(root)
        fresh = repo is None
        if repo is None:
            other = self._others.pop(root) if root in self._others else None
            repo = self._repos[root] = other or Repo(root)
        seen: set[str] = set()
        touched = {root: repo}  # the repositories (worktrees) of these sessions
        for wire in result["sessions"]:  # every worktree's of the repository
            s = Session.from_dict(wire)
            seen.add(s.id)
            home = self._home(s)
            touched[home.root] = home
            if fresh and s.id not in home.sessions:
                home.sessions[s.id] = s
            else:
                self._merge(home, s)
        for r in touched.values():
            for sid in [sid for sid in r.sessions if sid not in seen]:
                del r.sessions[sid]  # forgotten by the new daemon (keepFinishedDays)
        if fresh:
            self.ls.status.loaded([s for r in touched.values() for s in r.sessions.values()])
            log.info("repository %s: %d sessions", root, len(repo.sessions))
            await self.ls.settings.pull([root], with_global=False)  # its scoped settings, then
            await self.ls.settings.config_for(root)  # what is wrong with them (or untrusted) shows
        return root

    async def for_uri(self, uri: str) -> tuple[Repo, str]:
        """The repository of ``uri`` and the file's repository-relative path."""
        path = path_of(uri)
        if path is None:
            raise NotInRepository(
                f"{clip(uri, PATH_LIMIT)} is not a file on disk; save it inside a git repository to "
                "delegate from it."
            )
        try:
            is_dir = await anyio.to_thread.run_sync(path.is_dir)
        except OSError as exc:
            raise NotInRepository(f"{clip(path, PATH_LIMIT)}: {exc.strerror or exc}") from None
        if is_dir:
            raise NotInRepository(
                f"{clip(path, PATH_LIMIT)} is a folder: delegate from a file in it"
            )
        if ".git" in path.parts:
            raise NotInRepository(
                f"{clip(path, PATH_LIMIT)} is inside git's own folder, not a working tree"
            )
        repo = await self.for_path(path)
        rel = repo.relative(path)
        if rel is None:
            raise NotInRepository(f"{clip(path, PATH_LIMIT)} is outside the repository {repo.root}")
        folders = [f for f in map(path_of, self.ls.folder_uris()) if f is not None]
        if folders and not await anyio.to_thread.run_sync(_inside_any, path, folders):
            names = ", ".join(clip(f, 80) for f in folders[:3])
            raise NotInRepository(
                f"{clip(path, PATH_LIMIT)} is outside the workspace folders ({names}): open "
                "its folder in the editor to delegate from it"
            )
        return repo, rel

    async def discover(self, folder_uris: list[str]) -> None:
        """Load the repositories of the workspace folders (their sessions show up at once)."""
        try:
            for uri in folder_uris:
                path = path_of(uri)
                if path is None:
                    continue
                try:
                    await self.for_path(path, folder=True)
                except NotInRepository:
                    log.info("workspace folder %s is not in a git repository", path)
                except (RemoteError, OSError) as exc:
                    log.warning("workspace folder %s: %s", path, exc)
                    self.ls.show(f"Handoff: {exc}", types.MessageType.Warning)
        finally:
            self.discovered.set()

    # -- sessions --------------------------------------------------------------------------
    def sessions(self) -> list[Session]:
        found = [s for repo in self._all() for s in repo.sessions.values()]
        return sorted(found, key=lambda s: s.createdAt)

    def find(self, session_id: str) -> tuple[Repo, Session]:
        for repo in self._all():
            s = repo.sessions.get(session_id)
            if s is not None:
                return repo, s
        known = ", ".join(s.id for s in self.sessions()[-5:]) or "none"
        raise SessionError(f"there is no Handoff session `{session_id}` (latest: {known})")

    async def close(self) -> None:
        """Leave the daemon (its sessions go on without this editor)."""
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
        await self.daemon.close()

    # -- documents -------------------------------------------------------------------------
    def open_docs(self, repo: Repo) -> dict[str, OpenDoc]:
        """The open documents inside ``repo``, by repository-relative path (as they are now)."""
        docs: dict[str, OpenDoc] = {}
        for doc in list(self.ls.workspace.text_documents.values()):
            path = path_of(doc.uri)  # the uri as the client sent it (the key is unquoted)
            rel = repo.relative(path) if path is not None else None
            if rel is not None and not rel.startswith(".git/") and rel != ".git":
                docs[rel] = OpenDoc(doc.uri, doc.source, doc.version)
        return docs

    async def overlays(self, repo: Repo) -> dict[str, bytes]:
        """Open documents whose text differs from the disk: unsaved work the agent must see."""
        docs = self.open_docs(repo)

        def differing() -> dict[str, bytes]:
            out = {}
            for rel, doc in docs.items():
                data = doc.text.encode("utf-8")
                if repo.read_disk(rel) != data:
                    out[rel] = data
            return out

        return await anyio.to_thread.run_sync(differing)
