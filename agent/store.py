"""Where sessions live on disk: one folder a session, records written atomically.

Layout under the state root (``HANDOFF_STATE_DIR`` or ``platformdirs.user_state_dir("handoff")``)::

    repos/<name>-<hash>/sessions/<id>/record.json      the Session, as on the wire
                                      task.md          the brief every agent gets
                                      transcript.jsonl one JSON object a line
                                      messages.json    model conversation, for follow-ups
    repos/<name>-<hash>/worktrees/<id>/                the session's git worktree
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

    def __init__(self, repo_root: Path, root: Path | None = None, redactor: Redactor | None = None):
        self.repo_root = Path(repo_root)
        self.root = (root or state_root()) / "repos" / repo_key(self.repo_root)
        self.redactor = redactor or Redactor()

    def ensure_writable(self) -> None:
        """Raise StateDirError (one clear line) unless sessions can be stored here."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".writable.")
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise state_dir_error(exc, self.root.parent.parent) from None

    def session_dir(self, session_id: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", session_id):
            raise ValueError(f"not a session id: {session_id!r}")
        return self.root / "sessions" / session_id

    def worktree_path(self, session_id: str) -> Path:
        # Named after the session: git names its admin folder after the basename, and
        # unique names keep concurrent `git worktree add` calls apart.
        self.session_dir(session_id)  # validates the id
        return self.root / "worktrees" / session_id

    def save(self, session: Session) -> None:
        data = json.dumps(self.redactor.obj(session.to_wire()), indent=2, ensure_ascii=False)
        atomic_write(self.session_dir(session.id) / "record.json", data.encode("utf-8"))

    def load(self, session_id: str) -> Session | None:
        path = self.session_dir(session_id) / "record.json"
        try:
            return Session.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None

    def load_all(self) -> list[Session]:
        sessions: list[Session] = []
        folder = self.root / "sessions"
        if not folder.is_dir():
            return sessions
        for child in sorted(folder.iterdir()):
            try:
                s = self.load(child.name)
            except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
                continue  # a broken record is skipped, not fatal; gc can remove it
            if s is not None:
                sessions.append(s)
        return sessions

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
