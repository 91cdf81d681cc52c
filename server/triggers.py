"""``TODO(agent): ...`` comments start a session when their file is saved (``todo.autoTrigger``).

Once per comment: a marker is remembered by file and text, and so is every marker that was in the
file when it was opened (those were written before, not just now) and every marker some stored
session of the repository came from. Saving again, or restarting the server, starts nothing new.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from handoff.text import title_of
from handoff.uris import path_of
from lsprotocol import types

from . import delegation, todos
from .commands import EXPECTED
from .repos import NotInRepository

if TYPE_CHECKING:
    from .server import HandoffServer

log = logging.getLogger(__name__)


def _key(file: str | None, text: str) -> tuple[str | None, str]:
    return (file, title_of(" ".join(text.split())))


class Triggers:
    def __init__(self, ls: HandoffServer) -> None:
        self.ls = ls
        self._seen_at_open: dict[str, set[str]] = {}  # uri -> marker texts present at didOpen
        self._started: set[tuple[str | None, str]] = set()
        self._lock = asyncio.Lock()  # saves are handled one after the other, in order

    def opened(self, uri: str, text: str) -> None:
        if uri not in self._seen_at_open:
            self._seen_at_open[uri] = {
                " ".join(t.text.split()) for t in todos.find_todos(text) if t.for_agent
            }

    async def saved(self, uri: str, text: str | None) -> None:
        async with self._lock:
            await self._saved(uri, text)

    async def _saved(self, uri: str, text: str | None) -> None:
        if text is None or path_of(uri) is None:
            return
        markers = [t for t in todos.find_todos(text) if t.for_agent and t.text]
        old = self._seen_at_open.get(uri, set())
        markers = [t for t in markers if " ".join(t.text.split()) not in old]
        if not markers:
            return
        try:
            repo, file = await self.ls.repos.for_uri(uri)
        except NotInRepository as exc:
            self.ls.show(f"Handoff: TODO(agent) not started: {exc}", types.MessageType.Warning)
            self._seen_at_open.setdefault(uri, set()).update(
                " ".join(t.text.split()) for t in markers
            )
            return
        cfg = await self.ls.settings.config_for(repo.root)
        if not cfg["todo"]["autoTrigger"]:
            return
        from_sessions = {_key(s.file, s.title) for s in repo.sessions.values() if s.file}
        for t in markers:
            key = _key(file, t.text)
            if key in self._started or key in from_sessions:
                continue
            self._started.add(key)
            try:
                s = await delegation.delegate(
                    self.ls,
                    uri,
                    delegation.todo_range(text, t, self.ls.encoding),
                    instruction=delegation.todo_instruction(t, file),
                    title=" ".join(t.text.split()),
                )
            except (*EXPECTED, OSError) as exc:  # shown, never raised into the notification task
                log.warning("TODO(agent) at %s:%d not started: %s", file, t.line + 1, exc)
                self.ls.show(
                    f"Handoff: TODO(agent) at {file}:{t.line + 1} not started: {exc}",
                    types.MessageType.Warning,
                )
                continue
            log.info("TODO(agent) at %s:%d started session %s", file, t.line + 1, s.id)
