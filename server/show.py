"""What ``handoff.show`` opens and ``handoff.preview`` returns.

``show`` has the daemon write the session's report (state, summary, transcript in brief, then the
unified diff of its result, agent/report.py) to ``session.diff`` in the session's folder and asks
the client to open it with ``window/showDocument``. ``preview`` gives the proposed merged content of each file, for a diff
view in the editor.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handoff.agent import protocol
from handoff.agent.protocol import Session
from handoff.uris import doc_uri
from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.exceptions import JsonRpcException

from . import hunks
from .apply import plan
from .repos import Repo

if TYPE_CHECKING:
    from .server import HandoffServer

log = logging.getLogger(__name__)


async def show(ls: HandoffServer, repo: Repo, s: Session) -> Path:
    """The daemon writes the report (it holds the transcript and the result); the editor opens it."""
    path = Path((await ls.repos.call(protocol.REPORT, {"sessionId": s.id}))["path"])
    if get_capability(ls.client_capabilities, "window.show_document.support", False):
        try:
            result = await ls.window_show_document_async(
                types.ShowDocumentParams(uri=path.as_uri(), take_focus=True)
            )
        except JsonRpcException as exc:  # the editor failed the request: say where the report is
            log.info("window/showDocument failed: %s", exc)
            result = None
        if result is not None and result.success:
            return path
    ls.show(f"Handoff: the report of “{s.title}” is in {path}", types.MessageType.Info)
    return path


async def preview(ls: HandoffServer, repo: Repo, s: Session) -> list[dict[str, Any]]:
    """``[{uri, content, action, hunks}]``: each changed file as it would be after applying (null:
    deleted), and its changes one by one (hunks.py; their ranges are in the file as it is now)."""
    plans, docs, current, _ = await plan(ls, repo, s.id)
    by_path: dict[str, list[dict[str, Any]]] = {}
    for h in await hunks.publish(ls, repo, s, plans, docs, current):
        by_path.setdefault(h.path, []).append(h.wire())
    files = []
    for p in plans:
        if p.action == "unchanged":
            continue
        uri = doc_uri(docs, repo.root, p.path)
        content = (
            None
            if p.action == "delete" or p.content is None
            else p.content.decode("utf-8", "replace")
        )
        entry: dict[str, Any] = {"uri": uri, "content": content, "action": p.action}
        if p.old_path:
            entry["oldUri"] = (repo.root / p.old_path).as_uri()
        if p.action == "conflict":
            entry["conflicts"] = len(p.conflicts)
        entry["hunks"] = by_path.get(p.path, [])
        files.append(entry)
    return files
