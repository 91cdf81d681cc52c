"""Live state for the editor: the session list, progress and diagnostics.

- ``handoff/sessions`` ``{sessions: [Session]}``: the whole list, coalesced (at most one every
  100 ms), after any change of state; for a running session's steps and cost at most once a
  second; at once after a command that changed something.
- One cancellable work-done progress per running session (a fresh token per run) when the client
  supports ``window.workDoneProgress``; ``window/workDoneProgress/cancel`` cancels the session.
- Diagnostics with ``source: "handoff"`` and ``data: {sessionId, state}`` at each session's origin
  (and at conflict regions); they follow the text as the developer edits it.

The session managers call :meth:`Status.on_change` / :meth:`Status.on_progress` from the event loop
or from worker threads; everything here runs on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING

from handoff.agent.protocol import FINAL, Session, SessionError, State
from handoff.text import body, split_keepends, units
from handoff.uris import relative
from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.exceptions import JsonRpcException

from .anchors import Anchor, remap_all, shift
from .protocol import session_list

if TYPE_CHECKING:
    from .server import HandoffServer

log = logging.getLogger(__name__)
SOURCE = "handoff"
NOTIFICATION = "handoff/sessions"
MIN_INTERVAL_S = 0.1
PROGRESS_INTERVAL_S = 0.25  # a session's $/progress reports: at most four a second
STEPS_INTERVAL_S = 1.0  # the list for a running session's new step count or cost: once a second
_SHOWN = {State.QUEUED, State.RUNNING, State.READY, State.FAILED, State.INTERRUPTED}


@dataclasses.dataclass
class _Progress:
    token: str
    begun: bool = False
    done: bool = False
    last: float = 0.0  # when a report was last sent
    pending: str | None = None  # the latest message not sent yet
    timer: asyncio.TimerHandle | None = None


class Status:
    def __init__(self, ls: HandoffServer) -> None:
        self.ls = ls
        self.origins: dict[str, Anchor] = {}
        self.conflicts: dict[str, list[Anchor]] = {}
        self.hunks: dict[str, list[Anchor]] = {}  # a ready session's changes left (hunks.py)
        self._seen: dict[str, State] = {}
        self._progress: dict[str, _Progress] = {}
        self._token_session: dict[str, str] = {}
        self._texts: dict[str, str] = {}  # last known text of open documents (full-sync edits)
        self._split: dict[str, tuple[str, list[str]]] = {}  # uri -> (text, its lines)
        self._dirty_uris: set[str] = set()
        self._published: set[str] = set()
        self._list_dirty = False
        self._flush: asyncio.Handle | None = None
        self._steps_timer: asyncio.Handle | None = None
        self._last_flush = 0.0

    # -- from the managers (any thread) ----------------------------------------------------
    def on_change(self, s: Session) -> None:
        self._on_loop(self._changed, s)

    def on_progress(self, s: Session, message: str) -> None:
        self._on_loop(self._report, s, message)

    def _on_loop(self, fn, *args) -> None:
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
            self._anchor(s)
        self._schedule(*(s.uri for s in sessions if s.uri))

    def _changed(self, s: Session) -> None:
        prev = self._seen.get(s.id)
        self._seen[s.id] = s.state
        self._anchor(s)
        if s.state is State.RUNNING and s.id not in self._progress and self._can_progress:
            p = self._progress[s.id] = _Progress(f"handoff/{s.id}/{s.runs}/{uuid.uuid4().hex[:8]}")
            self._token_session[p.token] = s.id
            self.ls.spawn(self._begin(s, p), f"progress {s.id}")
        elif s.state is not State.RUNNING and s.id in self._progress:
            self._end(s.id, s.state.value)
        uris = [s.uri] if s.uri else []
        if s.state in (State.QUEUED, State.RUNNING, State.APPLIED, State.DISCARDED):
            uris += self.clear_conflicts(s.id)
            uris += [a.uri for a in self.hunks.pop(s.id, [])]
        if s.state is State.FAILED and prev is not State.FAILED:
            self.ls.show(
                f"Handoff: “{s.title}” failed: {s.error or 'unknown error'}",
                types.MessageType.Warning,
            )
        if s.state is State.READY and prev is not State.READY:
            self.ls.ready(s)
        self._schedule(*uris)

    # -- origins and conflicts ---------------------------------------------------------------
    def _anchor(self, s: Session) -> None:
        if s.state in FINAL:  # never shown again: nothing of it stays in memory but the record
            self.origins.pop(s.id, None)
            self.ls.apply_locks.pop(s.id, None)
        elif s.uri and s.id not in self.origins:
            self.origins[s.id] = Anchor.from_range(s.uri, s.id, s.range)

    def set_conflicts(self, session_id: str, regions: list[tuple[str, int, int, str]]) -> None:
        """Conflict regions ``(uri, start line, end line, message)`` of a session."""
        old = self.clear_conflicts(session_id)
        if regions:
            self.conflicts[session_id] = [
                Anchor(uri, session_id, (a, 0), (max(b, a + 1), 0), kind="conflict", message=msg)
                for uri, a, b, msg in regions
            ]
        self._schedule(*old, *(r[0] for r in regions))

    def set_hunks(self, session_id: str, hunks: list[tuple[str, types.Range, str, str]]) -> None:
        """The hunks ``(uri, range, id, message)`` of a ready session (one Hint diagnostic each)."""
        old = [a.uri for a in self.hunks.pop(session_id, [])]
        if hunks:
            self.hunks[session_id] = [
                Anchor(
                    uri,
                    session_id,
                    (r.start.line, r.start.character),
                    (r.end.line, r.end.character),
                    kind="hunk",
                    message=msg,
                    key=hid,
                )
                for uri, r, hid, msg in hunks
            ]
        self._schedule(*old, *(h[0] for h in hunks))

    def hunks_at(self, uri: str, first: int, last: int) -> list[Anchor]:
        """The hunk anchors of ``uri`` on a line in ``first..last``."""
        out = []
        for group in self.hunks.values():
            for a in group:
                rng = self._range(a)
                if a.uri == uri and rng.start.line <= last and rng.end.line >= first:
                    out.append(a)
        return out

    def clear_conflicts(self, session_id: str) -> list[str]:
        return [a.uri for a in self.conflicts.pop(session_id, [])]

    def document_opened(self, uri: str, text: str) -> None:
        self._texts[uri] = text

    def document_closed(self, uri: str) -> None:
        self._texts.pop(uri, None)
        self._split.pop(uri, None)

    def document_changed(self, params: types.DidChangeTextDocumentParams) -> None:
        """Move the anchors of the changed document with its text."""
        uri = params.text_document.uri
        anchors = [a for a in self.origins.values() if a.uri == uri]
        anchors += [a for group in self.conflicts.values() for a in group if a.uri == uri]
        anchors += [a for group in self.hunks.values() for a in group if a.uri == uri]
        old = self._texts.get(uri)
        new = self.ls.workspace.get_text_document(uri).source
        self._texts[uri] = new
        if not anchors:
            return
        moved = False
        encoding = self.ls.encoding
        for change in params.content_changes:
            rng = getattr(change, "range", None)
            if rng is None:
                if old is not None:  # one line diff for all of the document's anchors
                    moved |= remap_all(anchors, old, new)
                continue
            for a in anchors:
                moved |= shift(
                    a,
                    (rng.start.line, rng.start.character),
                    (rng.end.line, rng.end.character),
                    change.text,
                    encoding,
                )
        if not moved:
            return
        for a in anchors:
            if a.kind == "origin":
                try:
                    _, s = self.ls.repos.find(a.session_id)
                except SessionError:
                    continue
                s.range = a.as_range()
                self._list_dirty = True
        self._schedule(uri)

    # -- progress ----------------------------------------------------------------------------
    @property
    def _can_progress(self) -> bool:
        return bool(get_capability(self.ls.client_capabilities, "window.work_done_progress", False))

    async def _begin(self, s: Session, p: _Progress) -> None:
        try:
            await self.ls.work_done_progress.create_async(p.token)
        except JsonRpcException as exc:  # refused: the session runs without a progress bar
            log.info("progress not created for %s: %s", s.id, exc)
            self._forget(s.id, p)
            return
        if p.done:
            self._forget(s.id, p)
            return
        self.ls.work_done_progress.begin(
            p.token,
            types.WorkDoneProgressBegin(
                title=f"Handoff: {s.title}", cancellable=True, message=f"{s.agent} agent working"
            ),
        )
        p.begun = True

    def _report(self, s: Session, message: str) -> None:
        """A session's progress, at most every PROGRESS_INTERVAL_S (the latest message wins):
        an agent may report many times a second, more than anyone reads."""
        self._steps_changed()  # the list shows steps and cost too
        p = self._progress.get(s.id)
        if p is None or not p.begun or p.done or self.ls.loop is None:
            return
        p.pending = f"{message} (step {s.steps})" if s.steps else message
        if p.timer is None:
            wait = p.last + PROGRESS_INTERVAL_S - time.monotonic()
            if wait <= 0:
                self._send_progress(p)
            else:
                p.timer = self.ls.loop.call_later(wait, self._send_progress, p)

    def _send_progress(self, p: _Progress) -> None:
        p.timer = None
        if p.done or p.pending is None:
            return
        text, p.pending, p.last = p.pending, None, time.monotonic()
        self.ls.work_done_progress.report(p.token, types.WorkDoneProgressReport(message=text))

    def _end(self, session_id: str, message: str) -> None:
        p = self._progress.get(session_id)
        if p is None:
            return
        p.done = True
        if p.timer is not None:
            p.timer.cancel()
        if p.begun:
            self.ls.work_done_progress.end(p.token, types.WorkDoneProgressEnd(message=message))
            self._forget(session_id, p)

    def _forget(self, session_id: str, p: _Progress) -> None:
        if self._progress.get(session_id) is p:
            del self._progress[session_id]
        self._token_session.pop(p.token, None)
        self.ls.work_done_progress.tokens.pop(p.token, None)

    def session_of_token(self, token: str | int) -> str | None:
        return self._token_session.get(str(token))

    # -- publishing --------------------------------------------------------------------------
    def _schedule(self, *uris: str | None) -> None:
        self._dirty_uris.update(u for u in uris if u)
        self._list_dirty = True
        if self._flush is not None or self.ls.loop is None:
            return
        wait = max(0.0, self._last_flush + MIN_INTERVAL_S - time.monotonic())
        self._flush = self.ls.loop.call_later(wait, self.flush)

    def _steps_changed(self) -> None:
        """Steps and cost change on every tool call of every running agent: the list for them is
        sent at a slower pace than for a change of state (which sends it anyway)."""
        if self._list_dirty or self._steps_timer is not None or self.ls.loop is None:
            return
        wait = max(0.0, self._last_flush + STEPS_INTERVAL_S - time.monotonic())
        self._steps_timer = self.ls.loop.call_later(wait, self._steps_due)

    def _steps_due(self) -> None:
        self._steps_timer = None
        self._schedule()

    def flush_now(self) -> None:
        """Send the pending session list at once (a command's effects are visible when it
        returns); diagnostics stay with the coalescing timer, which is still pending."""
        if self._flush is not None and self._list_dirty:
            self._send_list(self.ls.repos.sessions())

    def flush(self) -> None:
        """Send the session list and the diagnostics of every document that changed."""
        self._flush = None
        self._last_flush = time.monotonic()
        sessions = self.ls.repos.sessions()
        if self._list_dirty:
            self._send_list(sessions)
        uris, self._dirty_uris = self._dirty_uris, set()
        for uri in uris:
            diags = self.diagnostics(uri, sessions)
            if diags or uri in self._published:
                self.ls.text_document_publish_diagnostics(
                    types.PublishDiagnosticsParams(uri=uri, diagnostics=diags)
                )
            if diags:
                self._published.add(uri)
            else:
                self._published.discard(uri)

    def _send_list(self, sessions: list[Session]) -> None:
        self._list_dirty = False
        self.ls.protocol.notify(NOTIFICATION, session_list(sessions))

    def diagnostics(self, uri: str, sessions: list[Session]) -> list[types.Diagnostic]:
        out = []
        for s in sessions:
            for a in self._anchors(s, uri):
                if a.kind == "conflict":
                    out.append(
                        self._diagnostic(
                            a,
                            s,
                            types.DiagnosticSeverity.Warning,
                            f"Handoff conflict: {a.message}",
                            conflict=True,
                        )
                    )
                elif a.kind == "hunk":
                    out.append(self._diagnostic(a, s, types.DiagnosticSeverity.Hint, a.message))
                else:
                    severity, message = describe(s, len(self.conflicts.get(s.id, [])))
                    out.append(self._diagnostic(a, s, severity, message))
        return out

    def touches(self, s: Session, uri: str, first: int, last: int) -> bool:
        """A diagnostic of ``s`` in ``uri`` is on a line in ``first..last`` (what
        :meth:`diagnostics` would say, without writing their messages)."""
        for a in self._anchors(s, uri):
            rng = self._range(a)
            if rng.start.line <= last and rng.end.line >= first:
                return True
        return False

    def _anchors(self, s: Session, uri: str) -> list[Anchor]:
        """Where ``s`` shows in ``uri``: its origin (while shown), then its conflicts."""
        a = self.origins.get(s.id)
        found = [a] if a is not None and a.uri == uri and s.state in _SHOWN else []
        found += [c for c in self.conflicts.get(s.id, []) if c.uri == uri]
        return found + [
            h for h in self.hunks.get(s.id, []) if h.uri == uri and s.state is State.READY
        ]

    def _range(self, a: Anchor) -> types.Range:
        if a.kind == "hunk":  # the lines it replaces (an insertion: the point where it goes)
            end = a.end
            lines = self._lines(a.uri)
            if end[1] == 0 and end[0] > a.start[0]:
                above = end[0] - 1
                text = body(lines[above]) if lines is not None and above < len(lines) else ""
                end = (above, units(text, self.ls.encoding))
            return types.Range(
                start=types.Position(line=a.start[0], character=a.start[1]),
                end=types.Position(line=end[0], character=end[1]),
            )
        if a.kind == "conflict":
            return types.Range(
                start=types.Position(line=a.start[0], character=0),
                end=types.Position(line=a.end[0], character=0),
            )
        # the origin's first line, to its end when the document is open
        line = a.start[0]
        end = types.Position(line=line + 1, character=0)
        lines = self._lines(a.uri)
        if lines is not None and line < len(lines):
            end = types.Position(line=line, character=units(body(lines[line]), self.ls.encoding))
        return types.Range(start=types.Position(line=line, character=0), end=end)

    def _lines(self, uri: str) -> list[str] | None:
        """The open document's lines, split once per text (pygls splits on every call)."""
        doc = self.ls.document(uri)
        if doc is None:
            return None
        source = doc.source
        kept = self._split.get(uri)
        if kept is None or kept[0] is not source:
            kept = self._split[uri] = (source, split_keepends(source))
        return kept[1]

    def _diagnostic(
        self, a: Anchor, s: Session, severity, message, conflict=False
    ) -> types.Diagnostic:
        data = {"sessionId": s.id, "state": s.state.value}
        if conflict:
            data["conflict"] = True
        code = "conflict" if conflict else s.state.value
        if a.kind == "hunk":
            data["hunkId"], code = a.key, "hunk"
        return types.Diagnostic(
            range=self._range(a),
            message=message,
            severity=severity,
            source=SOURCE,
            code=code,
            data=data,
        )


def describe(s: Session, conflicts: int = 0) -> tuple[types.DiagnosticSeverity, str]:
    """Severity and text of a session's origin diagnostic; the state is in the text itself."""
    info, warn = types.DiagnosticSeverity.Information, types.DiagnosticSeverity.Warning
    if s.state is State.QUEUED:
        return info, f"Handoff: queued: {s.title}"
    if s.state is State.RUNNING and s.question:
        call = s.question.get("toolCall") if isinstance(s.question, dict) else None
        what = (call or {}).get("title") if isinstance(call, dict) else None
        return warn, (
            f"Handoff: the {s.agent} agent asks permission: {what or 'a tool call'} "
            f"({s.title}); answer with this diagnostic's code actions"
        )
    if s.state is State.RUNNING:
        return info, f"Handoff: running: {s.title} ({s.agent} agent)"
    if s.state is State.READY:
        files = ", ".join(relative(u, s.repoRoot) for u in s.filesChanged) or "no files"
        summary = f" {s.summary.strip()}" if s.summary.strip() else ""
        if conflicts:
            return warn, (
                f"Handoff: ready with {conflicts} conflict(s) against your edits: "
                f"{s.title}. Changes {files}.{summary}"
            )
        return info, f"Handoff: ready to apply: {s.title}. Changes {files}.{summary}"
    if s.state is State.FAILED:
        return warn, f"Handoff: failed: {s.title}: {s.error or 'unknown error'}"
    return (
        warn,
        f"Handoff: {s.state.value}: {s.title}. {s.error or ''} Follow up to resume, or discard.",
    )
