"""Applying a ready session: merge against the files as they are now, one ``workspace/applyEdit``.

The merge runs in a worker thread against the open buffers (text and version taken when the merge
starts) or the disk. Conflicting files are not applied: their regions become Warning diagnostics
and the answer is ``{applied: false, conflicts: n}``, unless the developer asked for conflict
markers. If the client refuses the edit (the buffer moved meanwhile) the merge is done once more
against the new text. On success the session is marked applied: worktree and branch are removed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from handoff.agent.gitops import GitError
from handoff.agent.manager import SessionError
from handoff.agent.merge import FileMerge
from handoff.agent.session import State

from . import edits
from . import hunks as hunks_mod
from .repos import Repo

if TYPE_CHECKING:
    from .server import HandoffServer

log = logging.getLogger(__name__)
ATTEMPTS = 2


def not_ready(s) -> SessionError:
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


async def plan(ls: "HandoffServer", repo: Repo, session_id: str):
    """Merge the session's result into the files as they are now (in a worker thread)."""
    docs = ls.repos.open_docs(repo)  # the buffers as they are at this moment
    current: dict[str, bytes | None] = {}

    def read_current(path: str) -> bytes | None:
        if path in docs:
            data: bytes | None = docs[path].text.encode("utf-8")
        else:
            data = repo.manager.read_disk(path)
        current[path] = data
        return data

    plans = await anyio.to_thread.run_sync(repo.manager.plan, session_id, read_current)
    return plans, docs, current


def _conflict_count(plans: list[FileMerge]) -> int:
    return sum(max(1, len(p.conflicts)) for p in plans if p.action == "conflict")


async def apply_session(ls: "HandoffServer", session_id: str, *, conflict_markers: bool = False,
                        hunks: list[str] | None = None) -> dict[str, Any]:
    """Apply the session (``hunks``: only those of its changes; see hunks.py)."""
    repo, s = ls.repos.find(session_id)
    lock = ls.apply_locks.setdefault(session_id, asyncio.Lock())
    async with lock:
        if s.state is not State.READY:
            raise not_ready(s)
        reason = ""
        for _attempt in range(ATTEMPTS):
            plans, docs, current = await plan(ls, repo, session_id)
            left = False
            if hunks is not None:
                plans, left = await anyio.to_thread.run_sync(
                    hunks_mod.select, s, repo, plans, docs, current, hunks, ls.encoding)
            conflicts = [p for p in plans if p.action == "conflict"]
            count = _conflict_count(plans)
            unmarkable = [p for p in conflicts if p.content is None]
            if conflicts and (not conflict_markers or unmarkable):
                await _report_conflicts(ls, repo, s, conflicts, docs, count)
                return {"applied": False, "conflicts": count}
            caps = edits.EditCaps.from_client(ls.client_capabilities, ls.encoding)
            try:
                built = edits.build(plans, repo.root, docs, current, caps, label=f"Handoff: {s.title}",
                                    annotation_id=f"handoff-{s.id}", conflict_markers=conflict_markers)
            except ValueError as exc:
                raise SessionError(f"session {s.id} cannot be applied from the editor: {exc}") from None
            edit = built.edit
            if edit.document_changes or edit.changes:
                try:
                    result = await ls.workspace_apply_edit_async(
                        types.ApplyWorkspaceEditParams(edit=edit, label=f"Handoff: {s.title}"))
                except JsonRpcException as exc:  # the editor failed the request: nothing applied
                    raise SessionError(f"session {s.id} was not applied: the editor answered "
                                       f"workspace/applyEdit with an error: {exc}") from None
                if not result.applied:
                    reason = result.failure_reason or "the editor refused the edit"
                    log.info("apply %s refused (%s); merging again", s.id, reason)
                    continue
            if built.disk:
                await anyio.to_thread.run_sync(write_disk, built.disk)
            if left:  # the session stays ready with the rest of its changes
                hunks_mod.after_apply(ls, session_id)
                return {"applied": True, "conflicts": 0}
            await anyio.to_thread.run_sync(repo.manager.mark_applied, session_id)
            return {"applied": True, "conflicts": count if conflict_markers else 0}
        ls.show(f"Handoff: “{s.title}” was not applied: {reason}. Try again.", types.MessageType.Warning)
        return {"applied": False, "conflicts": 0}


async def check_conflicts(ls: "HandoffServer", session_id: str) -> int:
    """Show where a ready session conflicts with the developer's edits (when it becomes ready,
    and again after they edit one of its files); conflicts that went away stop showing."""
    try:
        repo, s = ls.repos.find(session_id)
        async with ls.apply_locks.setdefault(session_id, asyncio.Lock()):  # one merge at a time
            if s.state is not State.READY:
                return 0
            plans, docs, current = await plan(ls, repo, session_id)
            await hunks_mod.publish(ls, repo, s, plans, docs, current)
            conflicts = [p for p in plans if p.action == "conflict"]
            if conflicts or s.conflicts or session_id in ls.status.conflicts:  # none: the old ones go
                await _report_conflicts(ls, repo, s, conflicts, docs, _conflict_count(plans))
    except (SessionError, GitError) as exc:  # it moved on meanwhile, or git failed: apply will tell
        log.info("conflict check of %s skipped: %s", session_id, exc)
        return 0
    return len(conflicts)


async def _report_conflicts(ls, repo: Repo, s, conflicts: list[FileMerge], docs, count: int) -> None:
    """Show ``conflicts`` as the session's conflict diagnostics (none: its old ones go) and
    record their count."""
    regions = []
    for p in conflicts:
        base = p.old_path or p.path
        uri = docs[base].uri if base in docs else (repo.root / base).as_uri()
        for r in p.conflicts or []:
            regions.append((uri, r.start, r.end, p.reason))
        if not p.conflicts:
            regions.append((uri, 0, 0, p.reason))
    ls.status.set_conflicts(s.id, regions)
    s.conflicts = count
    await anyio.to_thread.run_sync(repo.manager.store.save, s)
    ls.status.on_change(s)


def write_disk(writes: list[edits.DiskWrite]) -> None:
    """What the client could not do itself (files created without resource operations...)."""
    for w in writes:
        if w.old_path is not None:
            w.old_path.unlink(missing_ok=True)
        if w.content is None:
            w.path.unlink(missing_ok=True)
            continue
        w.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = w.path.with_name(f".{w.path.name}.handoff-tmp")
        tmp.write_bytes(w.content)
        if w.path.exists():
            os.chmod(tmp, w.path.stat().st_mode)
        os.replace(tmp, Path(w.path))
