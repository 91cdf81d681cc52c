"""Repositories the server works in: one SessionManager per repository, created on first use.

A workspace folder (multi-root: each of them) or a delegated file leads to its repository's root
(found in a worker thread); the manager for that root is created once, its stored sessions loaded
in a worker thread. Every session of every repository is in one list for the editor.

Also here: what the developer sees of a repository: the open documents (uri, text, version) and
the ones whose text differs from the disk (the overlays of a snapshot).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from pygls.uris import to_fs_path

from handoff.agent import gitops
from handoff.agent.manager import SessionError, SessionManager
from handoff.agent.session import Session

from .edits import OpenDoc
from .protocol import clip

if TYPE_CHECKING:
    from .server import HandoffServer

log = logging.getLogger(__name__)


class NotInRepository(Exception):
    """The file is not inside a git repository (or is not a file at all)."""


@dataclasses.dataclass
class Repo:
    root: Path
    manager: SessionManager

    def relative(self, path: Path) -> str | None:
        """``path`` relative to the root (posix), None when it is outside."""
        for base in (self.root, self.root.resolve()):
            for p in (path, path.resolve()):
                try:
                    return p.relative_to(base).as_posix()
                except ValueError:
                    continue
        return None


def path_of(uri: str) -> Path | None:
    """The local absolute path of a ``file:`` uri; None for anything else (untitled buffers,
    a uri that decodes to a relative path or to one with a NUL byte)."""
    if not uri.startswith("file:"):
        return None
    fs = to_fs_path(uri)
    if not fs or "\x00" in fs or not fs.startswith("/"):
        return None
    return Path(fs)


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
    def __init__(self, ls: "HandoffServer") -> None:
        self.ls = ls
        self._repos: dict[Path, Repo] = {}
        self._building: dict[Path, asyncio.Task[Repo]] = {}
        self._root_of_dir: dict[Path, Path] = {}
        self._finding: dict[Path, asyncio.Task[Path]] = {}  # root lookups under way, by folder
        self.discovered = asyncio.Event()

    def roots(self) -> list[Path]:
        return list(self._repos)

    def get(self, root: Path) -> Repo | None:
        return self._repos.get(root)

    def all(self) -> list[Repo]:
        return list(self._repos.values())

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
        return await self._get(root)

    async def _find_root(self, key: Path, path: Path) -> Path:
        try:
            root = await anyio.to_thread.run_sync(gitops.find_repo_root, path)
        except gitops.NotARepository:
            raise NotInRepository(
                f"{clip(path, PATH_LIMIT)} is not inside a git repository. Handoff runs agents in git "
                "worktrees: run `git init` there (or open a file of a repository) and try again."
            ) from None
        except OSError as exc:  # a name too long, a folder we may not read...
            raise NotInRepository(f"{clip(path, PATH_LIMIT)}: {exc.strerror or exc}") from None
        finally:
            self._finding.pop(key, None)  # a failure is not kept: the next call looks again
        self._root_of_dir[key] = root
        return root

    async def for_uri(self, uri: str) -> tuple[Repo, str]:
        """The repository of ``uri`` and the file's repository-relative path."""
        path = path_of(uri)
        if path is None:
            raise NotInRepository(
                f"{clip(uri, PATH_LIMIT)} is not a file on disk; save it inside a git repository to "
                "delegate from it.")
        try:
            is_dir = await anyio.to_thread.run_sync(path.is_dir)
        except OSError as exc:
            raise NotInRepository(f"{clip(path, PATH_LIMIT)}: {exc.strerror or exc}") from None
        if is_dir:
            raise NotInRepository(f"{clip(path, PATH_LIMIT)} is a folder: delegate from a file in it")
        if ".git" in path.parts:
            raise NotInRepository(f"{clip(path, PATH_LIMIT)} is inside git's own folder, not a working tree")
        repo = await self.for_path(path)
        rel = repo.relative(path)
        if rel is None:
            raise NotInRepository(f"{clip(path, PATH_LIMIT)} is outside the repository {repo.root}")
        folders = [f for f in map(path_of, self.ls.folder_uris()) if f is not None]
        if folders and not await anyio.to_thread.run_sync(_inside_any, path, folders):
            names = ", ".join(clip(f, 80) for f in folders[:3])
            raise NotInRepository(f"{clip(path, PATH_LIMIT)} is outside the workspace folders ({names}): open "
                                  "its folder in the editor to delegate from it")
        return repo, rel

    async def _get(self, root: Path) -> Repo:
        if root in self._repos:
            return self._repos[root]
        task = self._building.get(root)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._build(root))
            self._building[root] = task
        return await asyncio.shield(task)

    async def _build(self, root: Path) -> Repo:
        try:
            await self.ls.settings.pull([root], with_global=False)
            cfg = await self.ls.settings.config_for(root)
            manager = SessionManager(root, cfg, agent_host=self.ls.agent_host)
            await anyio.to_thread.run_sync(manager.load)
            manager.subscribe(self.ls.status.on_change, self.ls.status.on_progress)
            repo = self._repos[root] = Repo(root, manager)
        finally:
            self._building.pop(root, None)
        self.ls.status.loaded(manager.list())
        log.info("repository %s: %d sessions", root, len(manager.sessions))
        return repo

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
                except (gitops.GitError, OSError) as exc:
                    log.warning("workspace folder %s: %s", path, exc)
        finally:
            self.discovered.set()

    # -- sessions --------------------------------------------------------------------------
    def sessions(self) -> list[Session]:
        found = [s for repo in self._repos.values() for s in repo.manager.list()]
        return sorted(found, key=lambda s: s.createdAt)

    def find(self, session_id: str) -> tuple[Repo, Session]:
        for repo in self._repos.values():
            s = repo.manager.sessions.get(session_id)
            if s is not None:
                return repo, s
        known = ", ".join(s.id for s in self.sessions()[-5:]) or "none"
        raise SessionError(f"there is no Handoff session `{session_id}` (latest: {known})")

    async def close(self) -> None:
        await asyncio.gather(*(r.manager.close() for r in self._repos.values()),
                             return_exceptions=True)

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
                if repo.manager.read_disk(rel) != data:
                    out[rel] = data
            return out

        return await anyio.to_thread.run_sync(differing)
