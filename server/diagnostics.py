"""Diagnostics at each session's origin, at its conflict regions and at its hunks.

``source: "handoff"``, ``data: {sessionId, state}`` (``conflict``, ``hunkId`` where they apply);
the origin's says the session's state (:func:`describe`); they follow the text as the developer
edits it (``server/anchors.py``). What they are sent with, and when, is ``server/status.py``'s.
Runs on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from handoff.agent.protocol import FINAL, Session, SessionError, State
from handoff.text import body, units
from handoff.uris import relative
from lsprotocol import types

from .anchors import Anchor, Mover
from .edits import Lines

if TYPE_CHECKING:
    from .server import HandoffServer

SOURCE = "handoff"
_SHOWN = {State.QUEUED, State.RUNNING, State.READY, State.FAILED, State.INTERRUPTED}


class Diagnostics:
    """Where each session shows in the documents (anchors), and the diagnostics there."""

    def __init__(self, ls: HandoffServer) -> None:
        self.ls = ls
        self.origins: dict[str, Anchor] = {}
        self.conflicts: dict[str, list[Anchor]] = {}
        self.hunks: dict[str, list[Anchor]] = {}  # a ready session's changes left (hunks.py)
        self._texts: dict[str, str] = {}  # last known text of open documents (full-sync edits)
        self._split: dict[str, tuple[str, Lines]] = {}  # uri -> (text, its lines)
        self.mover = Mover(ls.spawn, self._anchors_moved)  # anchors follow the edits
        self.on_moved: Callable[[str, bool], None] | None = None

    def anchor(self, s: Session) -> None:
        """Keep the origin of a session that is shown; forget a finished one's."""
        if s.state in FINAL:  # never shown again: nothing of it stays in memory but the record
            self.origins.pop(s.id, None)
            self.ls.apply_locks.pop(s.id, None)
        elif s.uri and s.id not in self.origins:
            self.origins[s.id] = Anchor.from_range(s.uri, s.id, s.range)

    def clear_hunks(self, session_id: str) -> list[str]:
        return [a.uri for a in self.hunks.pop(session_id, [])]

    def set_conflicts(self, session_id: str, regions: list[tuple[str, int, int, str]]) -> list[str]:
        """Conflict regions ``(uri, start line, end line, message)`` of a session; returns the
        uris whose diagnostics change."""
        old = self.clear_conflicts(session_id)
        if regions:
            self.conflicts[session_id] = [
                Anchor(uri, session_id, (a, 0), (max(b, a + 1), 0), kind="conflict", message=msg)
                for uri, a, b, msg in regions
            ]
        return [*old, *(r[0] for r in regions)]

    def set_hunks(
        self, session_id: str, hunks: list[tuple[str, types.Range, str, str]]
    ) -> list[str]:
        """The hunks ``(uri, range, id, message)`` of a ready session (one Hint diagnostic each)."""
        old = self.clear_hunks(session_id)
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
        return [*old, *(h[0] for h in hunks)]

    def hunks_at(self, uri: str, first: int, last: int) -> list[Anchor]:
        """The hunk anchors of ``uri`` on a line in ``first..last``."""
        out: list[Anchor] = []
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
        """Move the anchors of the changed document with its text (at once, or after a big diff
        in a worker thread); ``on_moved(uri, an origin moved)`` is told when they moved (the
        session list carries the origins' ranges)."""
        uri = params.text_document.uri
        anchors = [a for a in self.origins.values() if a.uri == uri]
        anchors += [a for group in self.conflicts.values() for a in group if a.uri == uri]
        anchors += [a for group in self.hunks.values() for a in group if a.uri == uri]
        old = self._texts.get(uri)
        new = self.ls.workspace.get_text_document(uri).source
        self._texts[uri] = new
        if not anchors:
            return
        steps = [
            ("full", old, new)
            if not isinstance(change, types.TextDocumentContentChangePartial)
            else (
                "range",
                (change.range.start.line, change.range.start.character),
                (change.range.end.line, change.range.end.character),
                change.text,
            )
            for change in params.content_changes
            if old is not None or getattr(change, "range", None) is not None
        ]
        self.mover.move(uri, anchors, steps, self.ls.encoding)  # big diffs off the loop

    def _anchors_moved(self, uri: str, anchors: list[Anchor]) -> None:
        origin_moved = False
        for a in anchors:
            if a.kind == "origin":
                try:
                    _, s = self.ls.repos.find(a.session_id)
                except SessionError:
                    continue
                s.range = a.as_range()
                origin_moved = True
        if self.on_moved is not None:
            self.on_moved(uri, origin_moved)

    def diagnostics(self, uri: str, sessions: list[Session]) -> list[types.Diagnostic]:
        out: list[types.Diagnostic] = []
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
        stop = types.Position(line=line + 1, character=0)
        lines = self._lines(a.uri)
        if lines is not None and line < len(lines):
            stop = types.Position(line=line, character=units(body(lines[line]), self.ls.encoding))
        return types.Range(start=types.Position(line=line, character=0), end=stop)

    def _lines(self, uri: str) -> Lines | None:
        """The open document's lines, split once per text (pygls splits on every call)."""
        doc = self.ls.document(uri)
        if doc is None:
            return None
        source = doc.source
        kept = self._split.get(uri)
        if kept is None or kept[0] is not source:
            kept = self._split[uri] = (source, Lines(source))  # no split of it all
        return kept[1]

    def _diagnostic(
        self,
        a: Anchor,
        s: Session,
        severity: types.DiagnosticSeverity,
        message: str,
        conflict: bool = False,
    ) -> types.Diagnostic:
        data: dict[str, Any] = {"sessionId": s.id, "state": s.state.value}
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
