"""Code actions: delegate a selection or a TODO, and act on a session from its diagnostics.

Every action carries a ``command`` (one of docs/DESIGN.md's commands with one object argument), so the
work starts on the server when the developer picks it, never while the menu is being built.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from handoff.agent.protocol import Session, SessionError, State, actions_of
from handoff.text import eol_of, line_span, shorten, split_lines, units
from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.workspace import TextDocument

from . import commands, delegation, todos
from .diagnostics import SOURCE

if TYPE_CHECKING:
    from .server import HandoffServer

log = logging.getLogger(__name__)

DELEGATE_KIND = "refactor.rewrite.handoff"
SESSION_KIND = "quickfix.handoff"
KINDS = [DELEGATE_KIND, SESSION_KIND]
TODO_MARK = "TODO(agent): "
# Line comments by language id (then by file extension); a language missing here gets `#`.
_SLASHES = (
    "c",
    "cpp",
    "cs",
    "csharp",
    "d",
    "dart",
    "go",
    "groovy",
    "java",
    "javascript",
    "javascriptreact",
    "jsonc",
    "kotlin",
    "objective-c",
    "php",
    "proto",
    "rust",
    "scala",
    "scss",
    "swift",
    "typescript",
    "typescriptreact",
    "vue",
    "zig",
)
_DASHES = ("lua", "sql", "haskell", "elm", "ada", "vhdl")
_SEMI = ("lisp", "clojure", "scheme", "racket", "elisp", "emacs-lisp", "fennel", "asm", "ini")
_EXT = {
    "js": "javascript",
    "jsx": "javascript",
    "ts": "typescript",
    "tsx": "typescript",
    "rs": "rust",
    "c": "c",
    "h": "c",
    "cc": "cpp",
    "cpp": "cpp",
    "hpp": "cpp",
    "go": "go",
    "java": "java",
    "kt": "kotlin",
    "swift": "swift",
    "cs": "cs",
    "scala": "scala",
    "zig": "zig",
    "dart": "dart",
    "php": "php",
    "lua": "lua",
    "sql": "sql",
    "hs": "haskell",
    "el": "elisp",
    "clj": "clojure",
    "scm": "scheme",
    "lisp": "lisp",
    "css": "css",
    "html": "html",
    "md": "markdown",
    "xml": "xml",
    "vue": "vue",
    "scss": "scss",
}
_BLOCK = {
    "css": ("/* ", " */"),
    "html": ("<!-- ", " -->"),
    "markdown": ("<!-- ", " -->"),
    "xml": ("<!-- ", " -->"),
}


@functools.lru_cache(maxsize=8)
def _todos(text: str) -> list[todos.Todo]:
    """TODOs of a document's text; code actions are asked for on every cursor move."""
    return todos.find_todos(text)


def _allowed(kind: str, only: Sequence[types.CodeActionKind | str] | None) -> bool:
    if not only:
        return True
    wanted = [str(getattr(o, "value", o)) for o in only]
    return any(not o or kind == o or kind.startswith(f"{o}.") for o in wanted)


def _action(
    title: str,
    kind: str,
    command: str,
    arg: dict[str, Any],
    diagnostics: list[types.Diagnostic] | None = None,
    preferred: bool = False,
) -> types.CodeAction:
    return types.CodeAction(
        title=title,
        kind=kind,
        diagnostics=diagnostics or None,
        is_preferred=preferred or None,
        command=types.Command(title=title, command=command, arguments=[arg]),
    )


def _session_of(d: types.Diagnostic) -> str | None:
    if d.source != SOURCE or not isinstance(d.data, dict):
        return None
    sid = d.data.get("sessionId")
    return sid if isinstance(sid, str) else None


def can_prompt(ls: HandoffServer) -> bool:
    """The client runs ``handoff.client.delegatePrompt`` itself (asks for the instruction): it says
    so with the client capability ``experimental.handoff.prompt``."""
    experimental = getattr(ls.client_capabilities, "experimental", None)
    handoff = experimental.get("handoff") if isinstance(experimental, dict) else None
    return isinstance(handoff, dict) and handoff.get("prompt") is True


def _comment(language: str, uri: str) -> tuple[str, str]:
    lang = language or _EXT.get(uri.rsplit("/", 1)[-1].rpartition(".")[2].lower(), "")
    if lang in _BLOCK:
        return _BLOCK[lang]
    if lang in _SLASHES:
        return "// ", ""
    if lang in _DASHES:
        return "-- ", ""
    if lang in _SEMI:
        return "; ", ""
    return "# ", ""


@functools.lru_cache(maxsize=8)
def _comments(text: str) -> tuple[dict[int, list[todos.Comment]], list[str]]:
    """A document's comments by line, and its lines (once per text, not per cursor move)."""
    by_line: dict[int, list[todos.Comment]] = {}
    for c in todos.comments(text):
        by_line.setdefault(c.line, []).append(c)
    return by_line, split_lines(text)


def _bare(text: str, rng: types.Range) -> bool:
    """No TODO and no comment in or above the selection says what to do: what
    :func:`delegation.task_of` would refuse (same rules), from per-text caches, since code actions
    are asked for on every selection change."""
    by_line, lines = _comments(text)
    last = len(lines) - 1
    start, end = line_span(commands.converter().unstructure(rng))
    start, end = min(start, last), min(end, last)
    if any(t.line <= end and t.end_line >= start for t in _todos(text)):
        return False
    inside = by_line.keys() if len(by_line) < end - start + 1 else range(start, end + 1)
    if any(start <= n <= end and any(c.text for c in by_line.get(n, ())) for n in inside):
        return False
    no = start - 1
    while no >= 0 and not lines[no].strip():
        no -= 1  # blank lines between the comment and the selection
    while no >= 0 and no in by_line and not lines[no][: by_line[no][-1].start].strip():
        if by_line[no][-1].text:
            return False
        no -= 1
    return True


def todo_action(
    ls: HandoffServer, uri: str, rng: types.Range, doc: TextDocument
) -> types.CodeAction:
    """For a client that cannot ask: a ``TODO(agent): `` line above the selection, indented like
    its first line, and the cursor at its end (``window/showDocument``) to type the task."""
    lines = split_lines(doc.source)
    line = min(rng.start.line, max(0, len(lines) - 1))
    first = lines[line] if lines else ""
    indent = first[: len(first) - len(first.lstrip(" \t"))]
    head, tail = _comment(getattr(doc, "language_id", "") or "", uri)
    inserted = f"{indent}{head}{TODO_MARK}{tail}"
    eol = eol_of(doc.source)
    at = types.Position(line=line, character=0)
    edit = types.TextEdit(range=types.Range(start=at, end=at), new_text=inserted + eol)
    caps = getattr(getattr(ls.client_capabilities, "workspace", None), "workspace_edit", None)
    if getattr(caps, "document_changes", False):
        workspace_edit = types.WorkspaceEdit(
            document_changes=[
                types.TextDocumentEdit(
                    text_document=types.OptionalVersionedTextDocumentIdentifier(
                        uri=uri, version=doc.version
                    ),
                    edits=[edit],
                )
            ]
        )
    else:
        workspace_edit = types.WorkspaceEdit(changes={uri: [edit]})
    title = "Delegate to background agent"  # the same action; the task is typed after the marker
    action = types.CodeAction(title=title, kind=DELEGATE_KIND, edit=workspace_edit)
    if get_capability(ls.client_capabilities, "window.show_document.support", False):
        cursor = types.Position(
            line=line, character=units(inserted[: len(inserted) - len(tail)], ls.encoding)
        )
        action.command = types.Command(
            title=title,
            command=commands.REVEAL,
            arguments=[
                {
                    "uri": uri,
                    "range": commands.converter().unstructure(
                        types.Range(start=cursor, end=cursor)
                    ),
                }
            ],
        )
    return action


def delegate_actions(
    ls, params: types.CodeActionParams, text: str | None
) -> list[types.CodeAction]:
    uri, rng = params.text_document.uri, params.range
    theirs = [
        commands.converter().unstructure(d)
        for d in params.context.diagnostics
        if d.source != SOURCE
    ]
    actions = []
    if rng.start != rng.end:
        arg = {"uri": uri, "range": commands.converter().unstructure(rng)}
        if theirs:
            arg["diagnostics"] = theirs
        doc = ls.document(uri)
        if text is None or doc is None or not _bare(text, rng):
            actions.append(
                _action("Delegate to background agent", DELEGATE_KIND, commands.DELEGATE, arg)
            )
        elif can_prompt(ls):  # the client asks for the instruction, then sends handoff.delegate
            actions.append(
                _action(
                    "Delegate to background agent",
                    DELEGATE_KIND,
                    commands.CLIENT_DELEGATE_PROMPT,
                    arg,
                )
            )
        else:
            actions.append(todo_action(ls, uri, rng, doc))
    if text is None:
        return actions
    found = _todos(text)
    here = [t for t in found if t.line <= rng.end.line and t.end_line >= rng.start.line]
    for t in here[:3]:
        arg = {"uri": uri, "range": delegation.todo_range(text, t, ls.encoding)}
        label = shorten(t.text, 50)
        actions.append(
            _action(
                f"Delegate {t.tag} to background agent: {label}",
                DELEGATE_KIND,
                commands.DELEGATE,
                arg,
                preferred=True,
            )
        )
    if len(found) > 1:
        actions.append(
            _action(
                f"Delegate all {len(found)} TODOs in this file",
                DELEGATE_KIND,
                commands.DELEGATE_TODOS,
                {"uri": uri},
            )
        )
    return actions


_LABELS = {
    "apply": "Apply",
    "show": "Show",
    "followUp": "Follow up on",
    "resume": "Resume",
    "cancel": "Cancel",
    "discard": "Discard",
}
_COMMANDS = {
    "apply": commands.APPLY,
    "show": commands.SHOW,
    "followUp": commands.FOLLOW_UP,
    "resume": commands.FOLLOW_UP,
    "cancel": commands.CANCEL,
    "discard": commands.DISCARD,
}


def hunk_actions(ls: HandoffServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    """ "Accept this change" / "Reject this change" for each hunk diagnostic here."""
    uri, rng = params.text_document.uri, params.range
    found: dict[tuple[str, str], list[types.Diagnostic]] = {}
    for d in params.context.diagnostics:
        sid = _session_of(d)
        hid = d.data.get("hunkId") if sid and isinstance(d.data, dict) else None
        if sid and isinstance(hid, str):
            found.setdefault((sid, hid), []).append(d)
    for a in ls.status.hunks_at(uri, rng.start.line, rng.end.line):  # a client that drops `data`
        found.setdefault((a.session_id, a.key), [])
    actions = []
    for (sid, hid), diags in found.items():
        where = ""
        if len(found) > 1:
            h = next((h for h in ls.status.hunks.get(sid, []) if h.key == hid), None)
            where = f" at line {h.start[0] + 1}" if h is not None else ""
        arg = {"sessionId": sid, "hunks": [hid]}
        actions.append(
            _action(
                f"Accept this change{where}",
                SESSION_KIND,
                commands.APPLY,
                arg,
                diags,
                preferred=len(found) == 1,
            )
        )
        actions.append(
            _action(f"Reject this change{where}", SESSION_KIND, commands.REJECT, arg, diags)
        )
    return actions


def session_actions(ls: HandoffServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    """What may be done with the sessions whose diagnostics are here (``Session.actions``)."""
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
    actions: list[types.CodeAction] = []
    for sid, diags in found.items():
        try:
            _, s = ls.repos.find(sid)
        except SessionError:  # a diagnostic of a session this server does not know (any more)
            continue
        actions += _actions_of_session(ls, s, diags)
    return actions


def _actions_of_session(
    ls: HandoffServer, s: Session, diags: list[types.Diagnostic]
) -> list[types.CodeAction]:
    """The code actions of one session, on its diagnostics ``diags``."""
    sid = s.id
    actions: list[types.CodeAction] = []
    arg = {"sessionId": sid}
    name = shorten(s.title, 40)
    conflicted = any(isinstance(d.data, dict) and d.data.get("conflict") for d in diags) or (
        s.state is State.READY and sid in ls.status.conflicts
    )

    def add(
        title: str,
        command: str,
        extra: dict[str, Any] | None = None,
        preferred=False,
        note: str = "",
    ):
        actions.append(
            _action(
                f"Handoff: {title} “{name}”{note}",
                SESSION_KIND,
                command,
                {**arg, **(extra or {})},
                diags,
                preferred,
            )
        )

    hunk_here = any(isinstance(d.data, dict) and "hunkId" in d.data for d in diags)
    for option in (s.question or {}).get("options") or []:  # an agent waits for an answer
        if isinstance(option, dict) and option.get("optionId"):
            add(
                f"{option.get('name') or option['optionId']} (the agent asks) in",
                commands.ANSWER,
                {"optionId": option["optionId"]},
                preferred=True,
            )
    for action in actions_of(s):
        if action not in _LABELS:
            continue  # applyHunks / reject: per hunk, above
        if action == "apply":
            title = "Apply all of" if s.hunks > 1 else "Apply"
            add(title, commands.APPLY, preferred=not conflicted and not hunk_here)  # merged anew
            if conflicted:
                add("Apply with conflict markers", commands.APPLY, {"conflictMarkers": True})
        elif action == "followUp":
            add(
                "Follow up on",
                commands.FOLLOW_UP,
                note=" (a comment at the origin says what next)",
            )
        elif action == "resume":
            add("Resume", commands.FOLLOW_UP, {"instruction": s.instruction})
        else:
            add(_LABELS[action], _COMMANDS[action])
    return actions


def register(ls: HandoffServer) -> None:
    @ls.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=KINDS, resolve_provider=False),
    )
    def code_action(
        ls: HandoffServer, params: types.CodeActionParams
    ) -> list[types.CodeAction] | None:
        only = params.context.only
        rng = params.range
        if (rng.start.line, rng.start.character) > (rng.end.line, rng.end.character):
            params.range = types.Range(start=rng.end, end=rng.start)  # a selection made backwards
        doc = ls.document(params.text_document.uri)
        text = doc.source if doc is not None else None
        actions = []
        if _allowed(SESSION_KIND, only):
            actions += hunk_actions(ls, params)
            actions += session_actions(ls, params)
        if _allowed(DELEGATE_KIND, only) and params.text_document.uri.startswith("file:"):
            actions += delegate_actions(ls, params, text)
        return actions or None
