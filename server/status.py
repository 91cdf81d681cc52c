"""Live state for the editor: what a session's change sends, and the ready/failed policy.

:class:`Status` takes the session changes and progress the front's mirror (``server/repos.py``)
receives and decides what follows: a running session gets a progress bar
(``server/progress.py``); a session that turns failed shows one warning; one that turns ready
goes to the server (``HandoffServer.ready``: auto-apply or the conflict check); a session that
runs again or ended loses its conflict and hunk diagnostics. The list and the diagnostics
(``server/session_list.py``, ``server/diagnostics.py``) are then sent, coalesced.

The session managers call :meth:`Status.on_change` / :meth:`Status.on_progress` from the event loop
or from worker threads; everything else here runs on the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from handoff.agent.protocol import Session, State
from lsprotocol import types

from .anchors import Anchor
from .diagnostics import Diagnostics
from .progress import Progress
from .session_list import Publisher

if TYPE_CHECKING:
    from .server import HandoffServer


class Status:
    def __init__(self, ls: HandoffServer) -> None:
        self.ls = ls
        self.shown = Diagnostics(ls)
        self.shown.on_moved = self._anchors_moved
        self.progress = Progress(ls)
        self.publisher = Publisher(ls, self.shown)
        self._seen: dict[str, State] = {}

    # -- from the managers (any thread) ----------------------------------------------------
    def on_change(self, s: Session) -> None:
        self._on_loop(self._changed, s)

    def on_progress(self, s: Session, message: str) -> None:
        self._on_loop(self._report, s, message)

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self.ls.loop
        if loop is None:
            return
        if threading.get_ident() == self.ls.loop_thread:
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    def loaded(self, sessions: list[Session]) -> None:
        """Sessions read from disk: show them (diagnostics, list) as they are."""
        for s in sessions:
            self._seen[s.id] = s.state
            self.shown.anchor(s)
        self.publisher.schedule(*(s.uri for s in sessions if s.uri))

    # -- the policy ----------------------------------------------------------------------------
    def _changed(self, s: Session) -> None:
        prev = self._seen.get(s.id)
        self._seen[s.id] = s.state
        self.shown.anchor(s)
        if s.state is State.RUNNING:
            self.progress.start(s)
        elif self.progress.running(s.id):
            self.progress.end(s.id, s.state.value)
        uris = [s.uri] if s.uri else []
        if s.state in (State.QUEUED, State.RUNNING, State.APPLIED, State.DISCARDED):
            uris += self.shown.clear_conflicts(s.id)
            uris += self.shown.clear_hunks(s.id)
        if s.state is State.FAILED and prev is not State.FAILED:
            self.ls.show(
                f"Handoff: “{s.title}” failed: {s.error or 'unknown error'}",
                types.MessageType.Warning,
            )
        if s.state is State.READY and prev is not State.READY:
            self.ls.ready(s)
        self.publisher.schedule(*uris)

    def _report(self, s: Session, message: str) -> None:
        self.publisher.steps_changed()  # the list shows steps and cost too
        self.progress.report(s, message)

    # -- what the rest of the server asks ------------------------------------------------------
    @property
    def conflicts(self) -> dict[str, list[Anchor]]:
        return self.shown.conflicts

    @property
    def hunks(self) -> dict[str, list[Anchor]]:
        return self.shown.hunks

    def set_conflicts(self, session_id: str, regions: list[tuple[str, int, int, str]]) -> None:
        """Conflict regions ``(uri, start line, end line, message)`` of a session."""
        self.publisher.schedule(*self.shown.set_conflicts(session_id, regions))

    def set_hunks(self, session_id: str, hunks: list[tuple[str, types.Range, str, str]]) -> None:
        """The hunks ``(uri, range, id, message)`` of a ready session (one Hint diagnostic each)."""
        self.publisher.schedule(*self.shown.set_hunks(session_id, hunks))

    def hunks_at(self, uri: str, first: int, last: int) -> list[Anchor]:
        return self.shown.hunks_at(uri, first, last)

    def touches(self, s: Session, uri: str, first: int, last: int) -> bool:
        return self.shown.touches(s, uri, first, last)

    def document_opened(self, uri: str, text: str) -> None:
        self.shown.document_opened(uri, text)

    def document_closed(self, uri: str) -> None:
        self.shown.document_closed(uri)

    def document_changed(self, params: types.DidChangeTextDocumentParams) -> None:
        self.shown.document_changed(params)  # then _anchors_moved, maybe after a worker thread

    def _anchors_moved(self, uri: str, origin_moved: bool) -> None:
        if origin_moved:
            self.publisher.list_dirty = True
        self.publisher.schedule(uri)

    def session_of_token(self, token: str | int) -> str | None:
        return self.progress.session_of_token(token)

    def flush_now(self) -> None:
        self.publisher.flush_now()
