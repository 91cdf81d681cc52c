"""From editor context to a session: the task, the snapshot overlays, the diagnostics in range.

Shared by the ``handoff.delegate`` / ``handoff.delegateTodos`` commands and the ``TODO(agent):``
save trigger. The agent sees what the developer sees: every open document of the repository whose
text differs from the disk goes into the snapshot as an overlay.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
from handoff.agent import protocol
from handoff.agent.client import RemoteError
from handoff.agent.protocol import Session, b64
from handoff.text import line_span, shorten, split_lines, title_of, units

from . import todos
from .repos import Repo

if TYPE_CHECKING:
    from .server import HandoffServer

log = logging.getLogger(__name__)
_SEVERITY = {1: "error", 2: "warning", 3: "info", 4: "hint"}
MAX_DIAGNOSTICS = 50  # in one brief
MAX_DIAGNOSTIC = 500  # characters of one


class NoTask(Exception):
    """No instruction was given and none can be read from the code."""


def todo_instruction(todo: todos.Todo, file: str) -> str:
    return (
        f"{todo.text}\n\n(This task comes from the {todo.tag} comment at line {todo.line + 1} "
        f"of `{file}`. Remove that comment when the task is done.)"
    )


def task_of(text: str, rng: Mapping[str, Any] | None, file: str) -> tuple[str, str]:
    """(instruction, title) read from the TODO or the comments in / above the range."""
    start, end = line_span(rng)
    last = len(split_lines(text)) - 1  # a stored range may be past a file that shrank
    start, end = min(start, last), min(end, last)
    markers = todos.todos_in(text, start, end)
    if len(markers) == 1:
        return todo_instruction(markers[0], file), markers[0].text
    if markers:
        lines = "\n".join(f"- {t.text} (the {t.tag} comment at line {t.line + 1})" for t in markers)
        return (
            f"Do these tasks from `{file}`, and remove each comment when it is done:\n{lines}",
            markers[0].text,
        )
    task = todos.task_from_comments(text, start, end)
    if not task:
        raise NoTask(
            f"No instruction given and no TODO or comment in or above lines {start + 1}-{end + 1} "
            f"of {file}: give an instruction, or write the task as a comment there."
        )
    return task, task.splitlines()[0]


def todo_range(text: str, todo: todos.Todo, encoding: str) -> dict[str, Any]:
    """A TODO's range in the client's position encoding."""
    lines = split_lines(text)
    return {
        "start": {"line": todo.line, "character": units(lines[todo.line][: todo.column], encoding)},
        "end": {
            "line": todo.end_line,
            "character": units(lines[todo.end_line][: todo.end_column], encoding),
        },
    }


def _get(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...`` through JSON objects, None where a step is missing or not an object."""
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _text(value: Any, limit: int = MAX_DIAGNOSTIC) -> str:
    return shorten(value if isinstance(value, str) else "" if value is None else str(value), limit)


def format_diagnostics(diagnostics: Any, rng: Mapping[str, Any] | None) -> list[str]:
    """Diagnostics the client reported in the range, as lines for the brief (not our own).
    They come from the client as any JSON: what is not a diagnostic is left out."""
    start, end = line_span(rng)
    out: list[str] = []
    for d in diagnostics if isinstance(diagnostics, list) else []:
        if len(out) >= MAX_DIAGNOSTICS:
            break
        if isinstance(d, str):
            out.append(_text(d))
            continue
        if not isinstance(d, Mapping) or d.get("source") == "handoff":
            continue
        line = _get(d, "range", "start", "line")
        line = line if isinstance(line, int) and not isinstance(line, bool) else start
        if rng and not start <= line <= end:
            continue
        severity = d.get("severity")
        sev = _SEVERITY.get(severity, "error") if isinstance(severity, int) else "error"
        src = f"[{_text(d['source'], 80)}] " if d.get("source") else ""
        code = f" ({_text(d['code'], 80)})" if d.get("code") not in (None, "") else ""
        out.append(f"line {line + 1}: {sev}: {src}{_text(d.get('message'))}{code}")
    return out


def ordered(rng: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The range with start before end (a client may send a selection backwards)."""
    if not rng:
        return None
    a, b = rng["start"], rng["end"]
    if (a["line"], a["character"]) > (b["line"], b["character"]):
        a, b = b, a
    return {"start": dict(a), "end": dict(b)}


def clamp(rng: dict[str, Any] | None, text: str, encoding: str) -> dict[str, Any] | None:
    """The range moved inside the document: past the last line means the end of the text, past
    a line's end means that line's end (as LSP says for positions)."""
    if not rng:
        return rng
    lines = split_lines(text)

    def inside(pos: Mapping[str, Any]) -> dict[str, int]:
        if pos["line"] >= len(lines):
            return {"line": len(lines) - 1, "character": units(lines[-1], encoding)}
        return {
            "line": pos["line"],
            "character": min(pos["character"], units(lines[pos["line"]], encoding)),
        }

    return {"start": inside(rng["start"]), "end": inside(rng["end"])}


async def text_if_any(ls: HandoffServer, repo: Repo, uri: str, file: str) -> str | None:
    """The file as the developer sees it: the open buffer, else the disk; None when neither."""
    doc = ls.document(uri)
    if doc is not None:
        return doc.source
    data = await anyio.to_thread.run_sync(repo.read_disk, file)
    return data.decode("utf-8", "replace") if data is not None else None


async def current_text(ls: HandoffServer, repo: Repo, uri: str, file: str) -> str:
    """:func:`text_if_any`, or :class:`NoTask` when the file is nowhere."""
    text = await text_if_any(ls, repo, uri, file)
    if text is None:
        raise NoTask(f"{file} does not exist on disk and is not open in the editor")
    return text


async def delegate(
    ls: HandoffServer,
    uri: str,
    rng: Mapping[str, Any] | None,
    *,
    instruction: str | None = None,
    agent: str | None = None,
    diagnostics: list[Any] | None = None,
    title: str | None = None,
) -> Session:
    """Start a session for ``uri`` / ``rng``; returns it queued (the work runs in the background)."""
    repo, file = await ls.repos.for_uri(uri)
    instruction = (instruction or "").strip()
    text = await text_if_any(ls, repo, uri, file)
    rng = ordered(rng)
    if text is not None:
        rng = clamp(rng, text, ls.encoding)
    if not instruction:
        if text is None:
            raise NoTask(f"{file} does not exist on disk and is not open in the editor")
        instruction, derived = task_of(text, rng, file)
        title = title or derived
    overlays = await ls.repos.overlays(repo)
    params = {
        "root": str(repo.root),
        "instruction": instruction,
        "file": file,
        "uri": uri,
        "range": dict(rng) if rng else None,
        "overlays": {k: b64(v) for k, v in overlays.items()},
        "agent": agent or None,
        "diagnostics": format_diagnostics(diagnostics, rng),
        "title": title_of(title) if title else None,
        **ls.settings.request_params(repo.root),
    }
    try:
        result = await ls.repos.call(protocol.DELEGATE, params)
    except RemoteError as exc:
        if "handoff trust" in str(exc):  # the repository's own agent: offer to trust it, once
            ls.settings.offer_trust(repo.root)
        raise
    ls.settings.report(result.get("messages") or [])
    session = ls.repos.adopt(result["session"])
    log.info("session %s: %s (%s, %d overlays)", session.id, session.title, file, len(overlays))
    return session
