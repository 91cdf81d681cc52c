"""How a session ends: applied or discarded (its worktree, branch and refs removed), and
``gc`` of what crashed or finished sessions left in git."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from .. import gitops
from ..processes import kill_processes_in
from ..session import (
    ACTIVE,
    Session,
    SessionError,
    State,
    transition,
)
from ..store import unfinished_ids
from .base import ManagerBase

log = logging.getLogger(__name__)


class Ending(ManagerBase):
    def mark_applied(self, session_id: str) -> Session:
        """The result is in the developer's files: record it and remove the worktree."""
        s = self.get(session_id)
        transition(s, State.APPLIED)
        s.conflicts = 0
        self._cleanup(s)
        self.store.save(s)
        self._changed(s)
        return s

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
        from ..backends.acp import forget

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
