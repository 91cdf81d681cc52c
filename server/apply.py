"""Applying a ready session: merge against the files as they are now, one ``workspace/applyEdit``.

The apply is claimed in the session daemon first (two editors never both apply a session); the
daemon merges against the open buffers this front sends (text and version taken when the merge
starts) or the disk. Conflicting files are not applied: their regions become Warning diagnostics
and the answer is ``{applied: false, conflicts: n}``, unless the developer asked for conflict
markers. If the client refuses the edit (the buffer moved meanwhile) the merge is done once more
against the new text. On success the session is marked applied: worktree and branch are removed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from handoff import files
from handoff.agent import protocol
from handoff.agent.client import RemoteError
from handoff.agent.protocol import Planned, Session, SessionError, State, b64, unb64
from handoff.uris import doc_uri
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from . import edits
from . import hunks as hunks_mod
from .repos import Repo

if TYPE_CHECKING:
    from .server import HandoffServer

log = logging.getLogger(__name__)
ATTEMPTS = 2
_checks: dict[tuple[int, str], asyncio.Task[Any]] = {}  # (id(server), session id): its check
INLINE_BYTES = 1 << 20  # base64 done on the event loop up to this size (~1 ms), else in a thread


async def plan(
    ls: HandoffServer, repo: Repo, session_id: str, *, claim: bool = False, record: bool = False
) -> tuple[list[Planned], dict[str, edits.OpenDoc], dict[str, bytes | None], str | None]:
    """Merge the session's result into the files as they are now (in the daemon): the plans, the
    open documents they were merged against, the content of every file merged against, and the
    apply's claim when ``claim``."""
    docs = ls.repos.open_docs(repo)  # the buffers as they are at this moment
    current: dict[str, bytes | None] = {rel: d.text.encode("utf-8") for rel, d in docs.items()}

    def encode() -> dict[str, str | None]:
        return {k: b64(v) for k, v in current.items()}

    # base64 of a few hundred KB takes less of the loop than a hop to a thread and back (which,
    # on a busy machine, is a wait for two wake-ups); big buffers go to a thread
    small = sum(len(v) for v in current.values() if v) <= INLINE_BYTES
    wire = encode() if small else await anyio.to_thread.run_sync(encode)
    result = await ls.repos.call(
        protocol.PLAN,
        {"sessionId": session_id, "current": wire, "claim": claim, "recordConflicts": record},
    )

    def decode() -> list[Planned]:
        for path, data in (result.get("disk") or {}).items():
            current[path] = unb64(data)
        return [Planned.from_wire(f) for f in result["files"]]

    size = sum(len(v or "") for v in (result.get("disk") or {}).values())
    size += sum(len(f.get("content") or "") + len(f.get("resolved") or "") for f in result["files"])
    plans = decode() if size <= INLINE_BYTES else await anyio.to_thread.run_sync(decode)
    return plans, docs, current, result.get("claim")


def _conflict_count(plans: list[Planned]) -> int:
    return sum(max(1, len(p.conflicts)) for p in plans if p.action == "conflict")


async def apply_session(
    ls: HandoffServer,
    session_id: str,
    *,
    conflict_markers: bool = False,
    hunks: list[str] | None = None,
) -> dict[str, Any]:
    """Apply the session (``hunks``: only those of its changes; see hunks.py). A conflict check
    of the session running now (it just became ready, or was edited) gives way: it is
    cancelled, the apply merges anyway, and the check runs again if the apply did not finish
    the session."""
    repo, s = ls.repos.find(session_id)
    ls.repos.check_applies_here(repo, s)
    lock = ls.apply_locks.setdefault(session_id, asyncio.Lock())
    check = _checks.get((id(ls), session_id))
    if check is not None and not check.done() and check is not asyncio.current_task():
        check.cancel()
        await asyncio.wait({check})
        try:
            return await _apply_locked(ls, repo, s, lock, session_id, conflict_markers, hunks)
        finally:
            if session_id in repo.sessions and repo.sessions[session_id].state is State.READY:
                ls.spawn(check_conflicts(ls, session_id), f"conflicts {session_id}")
    return await _apply_locked(ls, repo, s, lock, session_id, conflict_markers, hunks)


async def _apply_locked(
    ls: HandoffServer,
    repo: Repo,
    s: Session,
    lock: asyncio.Lock,
    session_id: str,
    conflict_markers: bool,
    hunks: list[str] | None,
) -> dict[str, Any]:
    async with lock:
        claim: str | None = None
        done = False
        conflicts_seen: int | None = None
        try:
            reason = ""
            for _attempt in range(ATTEMPTS):
                plans, docs, current, claim = await plan(ls, repo, session_id, claim=True)
                left = False
                if hunks is not None:  # only those changes (hunks.py)
                    plans, left = await anyio.to_thread.run_sync(
                        hunks_mod.select, s, repo, plans, docs, current, hunks, ls.encoding
                    )
                conflicts = [p for p in plans if p.action == "conflict"]
                count = _conflict_count(plans)
                unmarkable = [p for p in conflicts if p.content is None]
                if conflicts and (not conflict_markers or unmarkable):
                    conflicts_seen = count
                    _report_conflicts(ls, repo, s, conflicts, docs)
                    return {"applied": False, "conflicts": count}
                caps = edits.EditCaps.from_client(ls.client_capabilities, ls.encoding)
                try:
                    built = await anyio.to_thread.run_sync(
                        functools.partial(  # big diffs: off the loop
                            edits.build,
                            plans,
                            repo.root,
                            docs,
                            current,
                            caps,
                            label=f"Handoff: {s.title}",
                            annotation_id=f"handoff-{s.id}",
                            conflict_markers=conflict_markers,
                        )
                    )
                except ValueError as exc:
                    raise SessionError(
                        f"session {s.id} cannot be applied from the editor: {exc}"
                    ) from None
                edit = built.edit
                if edit.document_changes or edit.changes:
                    try:
                        result = await ls.workspace_apply_edit_async(
                            types.ApplyWorkspaceEditParams(edit=edit, label=f"Handoff: {s.title}")
                        )
                    except (
                        JsonRpcException
                    ) as exc:  # the editor failed the request: nothing applied
                        raise SessionError(
                            f"session {s.id} was not applied: the editor answered "
                            f"workspace/applyEdit with an error: {exc}"
                        ) from None
                    if not result.applied:
                        reason = result.failure_reason or "the editor refused the edit"
                        log.info("apply %s refused (%s); merging again", s.id, reason)
                        continue
                if built.disk:
                    try:
                        await anyio.to_thread.run_sync(write_disk, built.disk)
                    except OSError as exc:  # never reported as applied when it was not all done
                        raise SessionError(
                            f"session {s.id} was not fully applied: "
                            f"{exc.strerror or exc}: {exc.filename or ''} (the "
                            "session stays ready; `handoff apply` can finish it)"
                        ) from None
                if (
                    left
                ):  # the session stays ready with the rest of its changes; the claim goes back
                    hunks_mod.after_apply(ls, session_id)
                    return {"applied": True, "conflicts": 0}
                done = True
                ls.repos.adopt(
                    (
                        await ls.repos.call(
                            protocol.FINISH_APPLY,
                            {"sessionId": session_id, "claim": claim, "applied": True},
                        )
                    )["session"]
                )
                claim = None
                return {"applied": True, "conflicts": count if conflict_markers else 0}
            ls.show(
                f"Handoff: “{s.title}” was not applied: {reason}. Try again.",
                types.MessageType.Warning,
            )
            return {"applied": False, "conflicts": 0}
        finally:
            if claim is not None and not done:  # give the claim back (and say what conflicts)
                params: dict[str, Any] = {"sessionId": session_id, "claim": claim, "applied": False}
                if conflicts_seen is not None:
                    params["conflicts"] = conflicts_seen
                try:
                    await ls.repos.call(protocol.FINISH_APPLY, params)
                except RemoteError as exc:
                    log.info("releasing the apply of %s: %s", session_id, exc)


async def check_conflicts(ls: HandoffServer, session_id: str) -> int:
    """Show where a ready session conflicts with the developer's edits (when it becomes ready,
    and again after they edit one of its files); conflicts that went away stop showing."""
    key = (id(ls), session_id)
    task = asyncio.current_task()
    if task is not None:
        _checks[key] = task  # an apply cancels it (apply_session)
    try:
        repo, s = ls.repos.find(session_id)
        async with ls.apply_locks.setdefault(session_id, asyncio.Lock()):  # one merge at a time
            if s.state is not State.READY:
                return 0
            plans, docs, current, _ = await plan(ls, repo, session_id, record=True)
            await hunks_mod.publish(ls, repo, s, plans, docs, current)
            conflicts = [p for p in plans if p.action == "conflict"]
            if (
                conflicts or s.conflicts or session_id in ls.status.conflicts
            ):  # none: the old ones go
                _report_conflicts(ls, repo, s, conflicts, docs)
    except (
        SessionError,
        RemoteError,
    ) as exc:  # it moved on meanwhile, or git failed: apply will tell
        log.info("conflict check of %s skipped: %s", session_id, exc)
        return 0
    finally:
        if _checks.get(key) is task:
            del _checks[key]
    return len(conflicts)


def _report_conflicts(ls, repo: Repo, s, conflicts: list[Planned], docs) -> None:
    """Show ``conflicts`` as the session's conflict diagnostics (none: its old ones go); the
    daemon records their count."""
    regions = []
    for p in conflicts:
        base = p.old_path or p.path
        uri = doc_uri(docs, repo.root, base)
        for r in p.conflicts or []:
            regions.append((uri, r.start, r.end, p.reason))
        if not p.conflicts:
            regions.append((uri, 0, 0, p.reason))
    ls.status.set_conflicts(s.id, regions)
    ls.status.on_change(s)


def write_disk(writes: list[edits.DiskWrite]) -> None:
    """What the client could not do itself (files created without resource operations, binary
    content, symbolic links, executable bits), with handoff/files.py as ``handoff apply`` does."""
    for w in writes:
        if w.only_mode:
            files.set_mode(w.path, w.mode or files.REGULAR)
            continue
        if w.old_path is not None:
            w.old_path.unlink(missing_ok=True)
        if w.content is None:
            w.path.unlink(missing_ok=True)
            continue
        w.path.parent.mkdir(parents=True, exist_ok=True)
        files.write(Path(w.path), w.content, w.mode)
