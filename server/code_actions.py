"""Code actions: delegate a selection or a TODO, and act on a session from its diagnostics.

Every action carries a ``command`` (one of docs/DESIGN.md's commands with one object argument), so the
work starts on the server when the developer picks it, never while the menu is being built.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from lsprotocol import types

from handoff.agent.protocol import ACTIVE, SessionError, State

from . import commands, delegation, todos
from .status import SOURCE

log = logging.getLogger(__name__)

DELEGATE_KIND = "refactor.rewrite.handoff"
SESSION_KIND = "quickfix.handoff"
KINDS = [DELEGATE_KIND, SESSION_KIND]


@functools.lru_cache(maxsize=8)
def _todos(text: str) -> list[todos.Todo]:
    """TODOs of a document's text; code actions are asked for on every cursor move."""
    return todos.find_todos(text)


def _allowed(kind: str, only: list[str] | None) -> bool:
    if not only:
        return True
    wanted = [str(getattr(o, "value", o)) for o in only]
    return any(not o or kind == o or kind.startswith(f"{o}.") for o in wanted)


def _action(title: str, kind: str, command: str, arg: dict[str, Any],
            diagnostics: list[types.Diagnostic] | None = None, preferred: bool = False) -> types.CodeAction:
    return types.CodeAction(
        title=title, kind=kind, diagnostics=diagnostics or None, is_preferred=preferred or None,
        command=types.Command(title=title, command=command, arguments=[arg]))


def _session_of(d: types.Diagnostic) -> str | None:
    if d.source != SOURCE or not isinstance(d.data, dict):
        return None
    sid = d.data.get("sessionId")
    return sid if isinstance(sid, str) else None


def delegate_actions(ls, params: types.CodeActionParams, text: str | None) -> list[types.CodeAction]:
    uri, rng = params.text_document.uri, params.range
    theirs = [commands.converter().unstructure(d) for d in params.context.diagnostics if d.source != SOURCE]
    actions = []
    if rng.start != rng.end:
        arg = {"uri": uri, "range": commands.converter().unstructure(rng)}
        if theirs:
            arg["diagnostics"] = theirs
        actions.append(_action("Delegate to background agent", DELEGATE_KIND, commands.DELEGATE, arg))
    if text is None:
        return actions
    found = _todos(text)
    here = [t for t in found if t.line <= rng.end.line and t.end_line >= rng.start.line]
    for t in here[:3]:
        arg = {"uri": uri, "range": delegation.todo_range(text, t, ls.encoding)}
        label = t.text if len(t.text) <= 50 else t.text[:49] + "…"
        actions.append(_action(f"Delegate {t.tag} to background agent: {label}", DELEGATE_KIND,
                               commands.DELEGATE, arg, preferred=True))
    if len(found) > 1:
        actions.append(_action(f"Delegate all {len(found)} TODOs in this file", DELEGATE_KIND,
                               commands.DELEGATE_TODOS, {"uri": uri}))
    return actions


def session_actions(ls, params: types.CodeActionParams) -> list[types.CodeAction]:
    """Apply / Show / Follow up / Discard (and Cancel) for the sessions whose diagnostics are here."""
    uri, rng = params.text_document.uri, params.range
    found: dict[str, list[types.Diagnostic]] = {}
    for d in params.context.diagnostics:
        sid = _session_of(d)
        if sid:
            found.setdefault(sid, []).append(d)
    # Clients that drop `data` still get the actions: our own diagnostics under the cursor.
    for s in ls.repos.sessions():
        if ls.status.touches(s, uri, rng.start.line, rng.end.line):
            found.setdefault(s.id, [])
    actions = []
    for sid, diags in found.items():
        try:
            _, s = ls.repos.find(sid)
        except SessionError:  # a diagnostic of a session this server does not know (any more)
            continue
        arg = {"sessionId": sid}
        name = s.title if len(s.title) <= 40 else s.title[:39] + "…"
        conflicted = any(isinstance(d.data, dict) and d.data.get("conflict") for d in diags) or (
            s.state is State.READY and sid in ls.status.conflicts)

        def add(title: str, command: str, extra: dict[str, Any] | None = None, preferred=False,
                note: str = ""):
            actions.append(_action(f"Handoff: {title} “{name}”{note}", SESSION_KIND, command,
                                   {**arg, **(extra or {})}, diags, preferred))

        if s.state is State.READY:
            add("Apply", commands.APPLY, preferred=not conflicted)  # merges again, as things are now
            if conflicted:
                add("Apply with conflict markers", commands.APPLY, {"conflictMarkers": True})
        add("Show", commands.SHOW)
        if s.state in ACTIVE:
            add("Cancel", commands.CANCEL)
        elif s.state not in (State.APPLIED, State.DISCARDED):
            add("Follow up on", commands.FOLLOW_UP, note=" (a comment at the origin says what next)")
            add("Discard", commands.DISCARD)
    return actions


def register(ls) -> None:
    @ls.feature(types.TEXT_DOCUMENT_CODE_ACTION,
                types.CodeActionOptions(code_action_kinds=KINDS, resolve_provider=False))
    def code_action(ls, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        only = params.context.only
        rng = params.range
        if (rng.start.line, rng.start.character) > (rng.end.line, rng.end.character):
            params.range = types.Range(start=rng.end, end=rng.start)  # a selection made backwards
        doc = ls.document(params.text_document.uri)
        text = doc.source if doc is not None else None
        actions = []
        if _allowed(SESSION_KIND, only):
            actions += session_actions(ls, params)
        if _allowed(DELEGATE_KIND, only) and params.text_document.uri.startswith("file:"):
            actions += delegate_actions(ls, params, text)
        return actions or None
