"""What ``handoff.show`` opens and ``handoff.preview`` returns.

``show`` writes the session's report (state, summary, transcript in brief, then the unified diff
of its result) to ``session.diff`` in the session's folder and asks the client to open it with
``window/showDocument``. ``preview`` gives the proposed merged content of each file, for a diff
view in the editor.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.exceptions import JsonRpcException

from handoff.agent.session import Session
from handoff.agent.store import atomic_write

from . import hunks
from .apply import plan
from .repos import Repo

if TYPE_CHECKING:
    from .server import HandoffServer

log = logging.getLogger(__name__)
EVENT_WIDTH = 240
SHOWN_EVENTS = 60


def _event_line(event: dict[str, Any]) -> str:
    kind = event.get("type", "event")
    rest = {k: v for k, v in event.items() if k != "type"}
    if kind == "command_exit":
        out = (rest.get("stdout") or "").strip().splitlines()[-3:]
        err = (rest.get("stderr") or "").strip().splitlines()[-3:]
        text = f"exit {rest.get('code')} after {rest.get('seconds')} s"
        text += "".join(f"\n#     | {line}" for line in out + err)
        return f"# - {kind}: {text}"
    body = json.dumps(rest, ensure_ascii=False)
    if len(body) > EVENT_WIDTH:
        body = body[: EVENT_WIDTH - 1] + "…"
    return f"# - {kind}: {body}"


def render(repo: Repo, s: Session) -> str:
    """The report: a header of ``#`` lines (ignored by diff tools), then the diff (blocking)."""
    lines = [
        f"# Handoff session {s.id}: {s.title}",
        f"# state: {s.state.value}    agent: {s.agent}    steps: {s.steps}    cost: ${s.costUsd:.4f}",
        f"# origin: {s.file or '-'}    created: {s.createdAt}    updated: {s.updatedAt}",
    ]
    if s.error:
        lines.append(f"# error: {s.error}")
    if s.summary:
        lines += ["# summary:", *(f"#   {line}" for line in s.summary.splitlines())]
    lines += ["# instruction:", *(f"#   {line}" for line in s.instruction.splitlines())]
    events = repo.manager.store.read_transcript(s.id)
    if events:
        lines.append(f"# transcript ({len(events)} events, last {min(len(events), SHOWN_EVENTS)}):")
        lines += [_event_line(e) for e in events[-SHOWN_EVENTS:]]
    diff = repo.manager.diff(s.id) if s.resultCommit else ""
    lines.append("#")
    lines.append(diff if diff else "# (no changes yet)")
    return "\n".join(lines) + "\n"


async def show(ls: "HandoffServer", repo: Repo, s: Session) -> Path:
    path = repo.manager.store.session_dir(s.id) / "session.diff"

    def write() -> None:
        atomic_write(path, render(repo, s).encode("utf-8"))

    await anyio.to_thread.run_sync(write)
    if get_capability(ls.client_capabilities, "window.show_document.support", False):
        try:
            result = await ls.window_show_document_async(
                types.ShowDocumentParams(uri=path.as_uri(), take_focus=True))
        except JsonRpcException as exc:  # the editor failed the request: say where the report is
            log.info("window/showDocument failed: %s", exc)
            result = None
        if result is not None and result.success:
            return path
    ls.show(f"Handoff: the report of “{s.title}” is in {path}", types.MessageType.Info)
    return path


async def preview(ls: "HandoffServer", repo: Repo, s: Session) -> list[dict[str, Any]]:
    """``[{uri, content, action, hunks}]``: each changed file as it would be after applying (null:
    deleted), and its changes one by one (hunks.py; their ranges are in the file as it is now)."""
    plans, docs, current = await plan(ls, repo, s.id)
    by_path: dict[str, list[dict[str, Any]]] = {}
    for h in await hunks.publish(ls, repo, s, plans, docs, current):
        by_path.setdefault(h.path, []).append(h.wire())
    files = []
    for p in plans:
        if p.action == "unchanged":
            continue
        uri = docs[p.path].uri if p.path in docs else (repo.root / p.path).as_uri()
        content = None if p.action == "delete" or p.content is None else p.content.decode("utf-8", "replace")
        entry: dict[str, Any] = {"uri": uri, "content": content, "action": p.action}
        if p.old_path:
            entry["oldUri"] = (repo.root / p.old_path).as_uri()
        if p.action == "conflict":
            entry["conflicts"] = len(p.conflicts)
        entry["hunks"] = by_path.get(p.path, [])
        files.append(entry)
    return files
