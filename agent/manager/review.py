"""Reviewing a ready session's result: the three-way plan against the developer's files,
hunks rejected, conflicts and hunks counted, and ``handoff apply`` to disk."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .. import gitops, results
from ..merge import FileMerge
from ..session import (
    Session,
    SessionError,
    State,
    now_iso,
)
from .base import _message, not_ready
from .ending import Ending
from .requests import ApplyReport

log = logging.getLogger(__name__)


class Review(Ending):
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

    def diff(self, session_id: str) -> str:
        s = self.get(session_id)
        if not s.resultCommit:
            return ""
        return gitops.diff_text(self.repo_root, s.baseCommit, s.resultCommit)
