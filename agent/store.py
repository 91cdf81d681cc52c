"""Where sessions live on disk: one folder a session, records written atomically.

Layout under the state root (``HANDOFF_STATE_DIR`` or ``platformdirs.user_state_dir("handoff")``)::

    repos/<name>-<hash>/sessions/<id>/record.json      the Session, as on the wire
                                      task.md          the brief every agent gets
                                      transcript.jsonl one JSON object a line
                                      messages.json    model conversation, for follow-ups
    repos/<name>-<hash>/worktrees/<id>/                the session's git worktree
    repos/<name>-<hash>/pool/                          idle worktrees (agent/pool.py)
    repos/<name>-<hash>/index                          the kept split index (agent/keptindex.py)

One folder a repository, however many worktrees it has: ``<name>-<hash>`` is the key of its main
working tree (the first of ``git worktree list``; a bare repository's own folder), so every
linked worktree (``git worktree add ../wt``) stores its sessions beside the main checkout's, and
each record keeps its own ``repoRoot`` (the tree it was snapshotted from, where it applies).
Before, a linked worktree had a folder of its own (the key of its root): those folders are still
read (``Store.legacy``), and sessions found there stay there until they end.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from handoff.files import atomic_write

from .secrets import Redactor
from .session import Session


def state_root() -> Path:
    override = os.environ.get("HANDOFF_STATE_DIR")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_state_dir("handoff", appauthor=False))


class StateDirError(OSError):
    """The state folder cannot be written; the message names it and HANDOFF_STATE_DIR."""


def state_dir_error(exc: OSError, root: Path) -> StateDirError:
    what = exc.strerror or type(exc).__name__
    where = f": {exc.filename}" if exc.filename else ""
    return StateDirError(
        f"Handoff's state folder {root} cannot be written ({what}{where}); "
        "make it writable or set HANDOFF_STATE_DIR to a writable folder"
    )


def repo_key(repo_root: Path) -> str:
    resolved = str(Path(repo_root).resolve())
    digest = hashlib.sha1(resolved.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(resolved).name) or "repo"
    return f"{name}-{digest}"


def family(repo_root: Path) -> tuple[Path, list[Path]]:
    """The main working tree of the repository at ``repo_root`` (a bare repository: its git
    folder) and the roots of its other worktrees, ``git worktree list`` order (blocking; runs
    git). Outside git: ``repo_root`` alone."""
    from . import gitops

    try:
        entries = gitops.worktrees(Path(repo_root))
    except (gitops.GitError, OSError):
        entries = []
    roots = [Path(e["worktree"]) for e in entries if e.get("worktree")]
    if not roots:
        return Path(repo_root), []
    return roots[0], roots[1:]


def _same(a: str | Path, b: str | Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def unfinished_ids(state: Path | None = None) -> set[str]:
    """Ids of every session under the state root whose record does not say it ended (applied or
    discarded), whichever worktree of whichever repository it belongs to; a record that cannot
    be read counts as unfinished. ``gc`` removes only sessions that are not among them."""
    ids: set[str] = set()
    for record in ((state or state_root()) / "repos").glob("*/sessions/*/record.json"):
        try:
            state_name = json.loads(record.read_text(encoding="utf-8")).get("state")
        except (OSError, ValueError, AttributeError):
            state_name = None
        if state_name not in ("applied", "discarded"):
            ids.add(record.parent.name)
    return ids


def append_event(path: Path, event: dict[str, Any], redactor: Redactor) -> None:
    """One line of a session's transcript (its secrets replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(redactor.obj(event), ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)


class Store:
    """The sessions of one repository."""

    def __init__(
        self,
        repo_root: Path,
        root: Path | None = None,
        redactor: Redactor | None = None,
        *,
        like: Store | None = None,
    ):
        """The sessions of the worktree ``repo_root``, in its repository's folder (blocking: runs
        ``git worktree list`` unless ``like``, a store of another worktree of the same
        repository, says where that is)."""
        self.repo_root = Path(repo_root)
        self.redactor = redactor or Redactor()
        self.root: Path
        self.legacy: list[Path]
        self.main: Path
        if like is not None:
            self.root, self.legacy, self.main = like.root, list(like.legacy), like.main
            return
        repos = (root or state_root()) / "repos"
        main, others = family(self.repo_root)
        self.main = main  # the repository's main working tree (a bare one: its git folder)
        self.root = repos / repo_key(main)
        # the folders sessions had when each worktree had one of its own (still read)
        self.legacy = []
        for r in (self.repo_root, *others):
            folder = repos / repo_key(r)
            if folder != self.root and folder not in self.legacy:
                self.legacy.append(folder)

    @property
    def pool_dir(self) -> Path:
        """The warm pool's folder of this worktree (agent/pool.py): idle worktrees are made
        from its HEAD, so each worktree of a repository has its own."""
        if _same(self.repo_root, self.main):
            return self.root / "pool"
        return self.root / f"pool-{repo_key(self.repo_root)}"

    @property
    def index_path(self) -> Path:
        """The split copy of this worktree's index that snapshots start from
        (agent/keptindex.py)."""
        if _same(self.repo_root, self.main):
            return self.root / "index"
        return self.root / f"index-{repo_key(self.repo_root)}"

    def ensure_writable(self) -> None:
        """Raise StateDirError (one clear line) unless sessions can be stored here."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".writable.")
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise state_dir_error(exc, self.root.parent.parent) from None

    def _folder_of(self, session_id: str) -> Path:
        """The repository folder that holds the session (the shared one for a new session)."""
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", session_id):
            raise ValueError(f"not a session id: {session_id!r}")
        if not (self.root / "sessions" / session_id).is_dir():
            for folder in self.legacy:
                if (folder / "sessions" / session_id).is_dir():
                    return folder
        return self.root

    def session_dir(self, session_id: str) -> Path:
        return self._folder_of(session_id) / "sessions" / session_id

    def worktree_path(self, session_id: str) -> Path:
        # Named after the session: git names its admin folder after the basename, and
        # unique names keep concurrent `git worktree add` calls apart.
        return self._folder_of(session_id) / "worktrees" / session_id

    def save(self, session: Session) -> None:
        data = json.dumps(self.redactor.obj(session.to_wire()), indent=2, ensure_ascii=False)
        atomic_write(self.session_dir(session.id) / "record.json", data.encode("utf-8"))

    def load(self, session_id: str) -> Session | None:
        path = self.session_dir(session_id) / "record.json"
        try:
            return Session.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None

    def _records(self) -> dict[str, Path]:
        """Every record of the repository (all its worktrees), by session id: the shared
        folder's first, then the old per-worktree folders'."""
        found: dict[str, Path] = {}
        for folder in (self.root, *self.legacy):
            sessions = folder / "sessions"
            if not sessions.is_dir():
                continue
            for child in sorted(sessions.iterdir()):
                if child.name not in found and (child / "record.json").is_file():
                    found[child.name] = child / "record.json"
        return found

    def load_all(self) -> list[Session]:
        """The sessions of this worktree (those whose ``repoRoot`` is ``repo_root``)."""
        sessions: list[Session] = []
        for record in self._records().values():
            try:
                s = Session.from_dict(json.loads(record.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
                continue  # a broken record is skipped, not fatal; gc can remove it
            if not s.repoRoot or _same(s.repoRoot, self.repo_root):
                sessions.append(s)
        return sessions

    def roots(self) -> list[Path]:
        """The worktrees of this repository that have sessions here (their ``repoRoot``)."""
        roots: list[Path] = []
        for record in self._records().values():
            try:
                root = json.loads(record.read_text(encoding="utf-8")).get("repoRoot")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(root, str) and root and Path(root) not in roots:
                roots.append(Path(root))
        return roots

    def write_brief(self, session_id: str, text: str) -> Path:
        path = self.session_dir(session_id) / "task.md"
        atomic_write(path, self.redactor.text(text).encode("utf-8"))
        return path

    def transcript_path(self, session_id: str) -> Path:
        return self.session_dir(session_id) / "transcript.jsonl"

    def append_transcript(self, session_id: str, event: dict[str, Any]) -> None:
        append_event(self.transcript_path(session_id), event, self.redactor)

    def read_transcript(self, session_id: str) -> list[dict[str, Any]]:
        path = self.transcript_path(session_id)
        events = []
        try:
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        except FileNotFoundError:
            pass
        return events

    def save_messages(self, session_id: str, messages: list[dict[str, Any]]) -> None:
        data = json.dumps(self.redactor.obj(messages), ensure_ascii=False)
        atomic_write(self.session_dir(session_id) / "messages.json", data.encode("utf-8"))

    def load_messages(self, session_id: str) -> list[dict[str, Any]]:
        try:
            messages: list[dict[str, Any]] = json.loads(
                (self.session_dir(session_id) / "messages.json").read_text("utf-8")
            )
            return messages
        except (FileNotFoundError, json.JSONDecodeError):
            return []

    def remove(self, session_id: str) -> None:
        """Forget a session's files (not its git objects; see gitops.remove_session)."""
        import shutil

        shutil.rmtree(self.session_dir(session_id), ignore_errors=True)
