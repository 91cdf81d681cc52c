"""Hunks: a ready session's result as separate changes, accepted or rejected one by one.

A hunk is one change of the merge plan against a file as it is now (the open buffer, else the
disk): its ``range`` in that text, the ``oldText`` there and the proposed ``newText``. Its id is a
hash of the path, both texts and the occurrence among equal changes of the file, so it stays the
same while the session and the file do (lines typed above it move its range, not its id).

- ``handoff.preview`` lists them per file; every ready session shows one Hint diagnostic per hunk
  (``data: {sessionId, hunkId}``) with the code actions "Accept this change" / "Reject this change".
- ``handoff.apply {sessionId, hunks}`` applies only those (:func:`select` narrows the plan); the
  session stays ready while any change is left, and is applied when none is.
- ``handoff.reject {sessionId, hunks, reason?}`` takes them out of the session's result (a new
  result (the daemon's ``rejectChanges``: a new result commit in the session's worktree); with a
  reason the agent is followed up with it, and its next result is reviewed the same way.

A created, deleted, renamed or binary file is one hunk (``file: true``): taken or left whole.
A file that conflicts with the developer's edits has the hunks of the parts that merge cleanly
(against the merge that keeps the developer's side where it conflicts); the conflicts show as before.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from handoff.agent import protocol
from handoff.agent.protocol import Planned, Session, SessionError, allows, b64
from handoff.text import split_keepends
from handoff.uris import doc_uri
from lsprotocol import types

from . import edits
from .repos import Repo

if TYPE_CHECKING:
    from .server import HandoffServer

log = logging.getLogger(__name__)
SHOWN_LINES = 8  # of a hunk, in its diagnostic's message and in a follow-up


@dataclasses.dataclass(frozen=True)
class Hunk:
    id: str
    path: str  # repository-relative path of the file it changes (its new path for a rename)
    uri: str  # where it lands now (the old path's uri for a rename)
    range: types.Range  # in the text as it is now, in the client's position encoding
    old_text: str
    new_text: str
    whole: bool = False  # a whole file: created, deleted, renamed or binary

    def wire(self) -> dict[str, Any]:
        r = self.range
        out: dict[str, Any] = {
            "id": self.id,
            "range": {
                "start": {"line": r.start.line, "character": r.start.character},
                "end": {"line": r.end.line, "character": r.end.character},
            },
            "newText": self.new_text,
            "oldText": self.old_text,
        }
        if self.whole:
            out["file"] = True
        return out


def _id(path: str, old: str, new: str, occurrence: int) -> str:
    h = hashlib.sha1()
    for part in (path, old, new, str(occurrence)):
        h.update(part.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:16]


def _line_index(pos: types.Position) -> int:
    """The line index of a position :func:`edits.text_edits` makes: a line start, or the end of
    an unterminated last line (then: past it)."""
    return pos.line + (1 if pos.character else 0)


def file_hunks(fm: Planned, uri: str, current: str | None, encoding: str) -> list[Hunk]:
    """The hunks of one file's merge plan against its current text (None: it does not exist)."""
    if fm.action == "unchanged" or (fm.action == "conflict" and fm.resolved is None):
        return []
    text_merge = fm.action == "write" or (fm.action == "conflict" and not fm.old_path)
    new = edits._decode(fm.resolved if fm.action == "conflict" else fm.content)
    if text_merge and current is not None and new is not None:
        lines = split_keepends(current)
        seen: collections.Counter[tuple[str, str]] = collections.Counter()
        found = []
        for e in edits.text_edits(current, new, encoding):  # the one diff of the file
            old = "".join(lines[_line_index(e.range.start) : _line_index(e.range.end)])
            n = seen[(old, e.new_text)]
            seen[(old, e.new_text)] += 1
            found.append(
                Hunk(_id(fm.path, old, e.new_text, n), fm.path, uri, e.range, old, e.new_text)
            )
        return found
    if fm.action == "conflict":
        return []
    old = current or ""
    old_lines = split_keepends(old)
    end = (
        edits.line_position(old_lines, len(old_lines), encoding)
        if fm.action != "create"
        else types.Position(line=0, character=0)
    )
    rng = types.Range(start=types.Position(line=0, character=0), end=end)
    text = "" if fm.action == "delete" else (new or "")
    return [
        Hunk(
            _id(f"{fm.action}:{fm.old_path or ''}:{fm.path}", old, text, 0),
            fm.path,
            uri,
            rng,
            old,
            text,
            whole=True,
        )
    ]


def hunks_of(
    repo: Repo,
    plans: list[Planned],
    docs: Mapping[str, edits.OpenDoc],
    current: Mapping[str, bytes | None],
    encoding: str,
) -> list[Hunk]:
    """Every hunk of a merge plan, file by file in the plan's order."""
    found: list[Hunk] = []
    for fm in plans:
        where = fm.old_path or fm.path
        uri = doc_uri(docs, repo.root, where)
        text = docs[where].text if where in docs else edits._decode(current.get(where))
        found += file_hunks(fm, uri, text, encoding)
    return found


def _text_of(
    path: str, docs: Mapping[str, edits.OpenDoc], current: Mapping[str, bytes | None]
) -> str:
    if path in docs:
        return docs[path].text
    text = edits._decode(current.get(path))
    assert text is not None, path  # a text hunk exists only for a text file
    return text


def _apply(text: str, hunks: Iterable[Hunk], encoding: str) -> str:
    return edits.apply_text_edits(
        text, [types.TextEdit(range=h.range, new_text=h.new_text) for h in hunks], encoding
    )


def _check(session: Session, found: list[Hunk], ids: list[str]) -> set[str]:
    wanted = set(ids)
    unknown = wanted - {h.id for h in found}
    if not wanted:
        raise SessionError("name at least one change (`hunks`: ids from handoff.preview)")
    if unknown:
        raise SessionError(
            f"session {session.id} has no change {', '.join(sorted(unknown))} (any more): the file "
            "changed since it was shown, or it was taken already; look at its changes again"
        )
    return wanted


def select(
    session: Session,
    repo: Repo,
    plans: list[Planned],
    docs: Mapping[str, edits.OpenDoc],
    current: Mapping[str, bytes | None],
    ids: list[str],
    encoding: str,
) -> tuple[list[Planned], bool]:
    """The plan narrowed to the hunks ``ids``, and whether anything is left after them."""
    found = hunks_of(repo, plans, docs, current, encoding)
    wanted = _check(session, found, ids)
    by_path: dict[str, list[Hunk]] = collections.defaultdict(list)
    for h in found:
        if h.id in wanted:
            by_path[h.path].append(h)
    chosen: list[Planned] = []
    for fm in plans:
        hs = by_path.get(fm.path)
        if not hs:
            continue
        if hs[0].whole:
            chosen.append(fm)
            continue
        content = _apply(_text_of(fm.path, docs, current), hs, encoding)
        chosen.append(
            Planned(
                fm.path,
                "write",
                content.encode("utf-8"),
                [],  # the agent's mode too
                mode=fm.mode,
                current_mode=fm.current_mode,
            )
        )
    left = any(h.id not in wanted for h in found) or any(fm.action == "conflict" for fm in plans)
    return chosen, left


def describe(hunks: list[Hunk]) -> str:
    """The hunks as a short diff, for a follow-up and the transcript."""
    parts = []
    for h in hunks:
        where = f"{h.path}, line {h.range.start.line + 1}" if not h.whole else h.path
        body = [f"-{line}" for line in h.old_text.splitlines()][:SHOWN_LINES]
        body += [f"+{line}" for line in h.new_text.splitlines()][:SHOWN_LINES]
        parts.append(f"{where}:\n```diff\n" + "\n".join(body) + "\n```")
    return "\n".join(parts)


def message(h: Hunk, s: Session) -> str:
    """The text of a hunk's diagnostic."""
    if h.whole:
        what = "creates" if not h.old_text and h.range.end.line == 0 else "changes"
        return f"Handoff “{s.title}” {what} this whole file"
    old, new = h.old_text.splitlines(), h.new_text.splitlines()
    verb = "adds" if not old else "removes" if not new else "changes"
    lines = [f"+ {line}" for line in new[:SHOWN_LINES]]
    if len(new) > SHOWN_LINES:
        lines.append(f"+ … ({len(new) - SHOWN_LINES} more lines)")
    if not new:
        lines = [f"- {line}" for line in old[:SHOWN_LINES]]
    n = len(old) or len(new)
    return f"Handoff “{s.title}” {verb} {n} line{'s' if n != 1 else ''} here:\n" + "\n".join(lines)


async def publish(
    ls: HandoffServer,
    repo: Repo,
    s: Session,
    plans: list[Planned],
    docs: Mapping[str, edits.OpenDoc],
    current: Mapping[str, bytes | None],
) -> list[Hunk]:
    """Show the hunks of a fresh merge plan as the session's Hint diagnostics, and count them
    (the diff runs in a worker thread: a big file must not hold up the editor)."""
    found = await anyio.to_thread.run_sync(hunks_of, repo, plans, docs, current, ls.encoding)
    ls.status.set_hunks(s.id, [(h.uri, h.range, h.id, message(h, s)) for h in found])
    if s.hunks != len(found):
        s.hunks = len(found)  # the session list says how many are left (the daemon keeps it)
        ls.status.on_change(s)
        try:
            await ls.repos.call(protocol.RECORD_HUNKS, {"sessionId": s.id, "hunks": len(found)})
        except protocol.RemoteError as exc:  # it moved on meanwhile: its next state says so
            log.info("recording the hunks of %s: %s", s.id, exc)
    return found


async def reject(
    ls: HandoffServer, session_id: str, ids: list[str], reason: str | None
) -> dict[str, Any]:
    """``handoff.reject``: take the hunks out of the result; follow up with the reason if any."""
    from .apply import check_conflicts, plan

    repo, s = ls.repos.find(session_id)
    async with ls.apply_locks.setdefault(session_id, asyncio.Lock()):
        if not allows(s, "reject"):
            raise SessionError(
                f"session {s.id} is {s.state.value}: only the changes of a ready "
                "session can be rejected"
            )
        plans, docs, current, _ = await plan(ls, repo, session_id)
        found = await anyio.to_thread.run_sync(hunks_of, repo, plans, docs, current, ls.encoding)
        wanted = _check(s, found, ids)
        rejected = [h for h in found if h.id in wanted]
        reverts = await anyio.to_thread.run_sync(
            _reverts, plans, found, wanted, docs, current, ls.encoding
        )
        shown = describe(rejected)
        reason = (reason or "").strip()
        left = any(h.id not in wanted for h in found) or any(
            fm.action == "conflict" for fm in plans
        )
        result = await ls.repos.call(
            protocol.REJECT_CHANGES,
            {
                "sessionId": session_id,
                "reverts": reverts,
                "note": f"{shown}\n{reason}".strip(),
                "finish": not left and not reason,
            },
        )  # nothing left: the session ends
        ls.repos.adopt(result["session"])
        if reason:
            ls.repos.adopt(
                (
                    await ls.repos.call(
                        protocol.FOLLOW_UP,
                        {
                            "sessionId": session_id,
                            "instruction": follow_up_text(rejected, shown, reason),
                            **ls.settings.request_params(repo.root),
                        },
                    )
                )["session"]
            )
            return {}
        if not left:
            return {}
    ls.spawn(check_conflicts(ls, session_id), f"hunks {session_id}")
    return {}


def _reverts(
    plans: list[Planned],
    found: list[Hunk],
    wanted: set[str],
    docs: Mapping[str, edits.OpenDoc],
    current: Mapping[str, bytes | None],
    encoding: str,
) -> list[dict[str, Any]]:
    """What to take out of the result for the hunks ``wanted``, file by file (the daemon's
    ``rejectChanges`` reverts: ``merged -> kept``, or the whole file back to the snapshot)."""
    reverts: list[dict[str, Any]] = []
    for fm in plans:
        mine = [h for h in found if h.path == fm.path and h.id in wanted]
        if not mine:
            continue
        if mine[0].whole:
            reverts.append({"path": fm.path, "oldPath": fm.old_path})
            continue
        others = [h for h in found if h.path == fm.path and h.id not in wanted]
        kept = _apply(_text_of(fm.path, docs, current), others, encoding)
        merged = fm.resolved if fm.action == "conflict" else fm.content
        reverts.append({"path": fm.path, "merged": b64(merged), "kept": b64(kept.encode("utf-8"))})
    return reverts


def follow_up_text(rejected: list[Hunk], shown: str, reason: str) -> str:
    these = "this change" if len(rejected) == 1 else "these changes"
    return (
        f"The developer rejected {these}:\n{shown}\nReason: {reason}\n\n"
        f"{'It was' if len(rejected) == 1 else 'They were'} taken out of your work in this "
        "worktree. Do what the reason asks instead; leave the rest of your work as it is."
    )


def after_apply(ls: HandoffServer, session_id: str) -> None:
    """Some hunks were applied and others are left: show those again (merged anew)."""
    from .apply import check_conflicts

    ls.spawn(check_conflicts(ls, session_id), f"hunks {session_id}")
