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

from handoff.agent.manager import DelegateRequest
from handoff.agent.session import Session

from . import todos
from .edits import units
from .repos import Repo

if TYPE_CHECKING:
    from .server import HandoffServer

log = logging.getLogger(__name__)
_SEVERITY = {1: "error", 2: "warning", 3: "info", 4: "hint"}


class NoTask(Exception):
    """No instruction was given and none can be read from the code."""


def todo_instruction(todo: todos.Todo, file: str) -> str:
    return (f"{todo.text}\n\n(This task comes from the {todo.tag} comment at line {todo.line + 1} "
            f"of `{file}`. Remove that comment when the task is done.)")


def line_span(rng: Mapping[str, Any] | None) -> tuple[int, int]:
    """First and last line a range covers (an end at column 0 leaves that line out)."""
    if not rng:
        return 0, 0
    start, end = int(rng["start"]["line"]), int(rng["end"]["line"])
    if end > start and int(rng["end"].get("character", 0)) == 0:
        end -= 1
    return start, max(start, end)


def task_of(text: str, rng: Mapping[str, Any] | None, file: str) -> tuple[str, str]:
    """(instruction, title) read from the TODO or the comments in / above the range."""
    start, end = line_span(rng)
    markers = todos.todos_in(text, start, end)
    if len(markers) == 1:
        return todo_instruction(markers[0], file), markers[0].text
    if markers:
        lines = "\n".join(f"- {t.text} (the {t.tag} comment at line {t.line + 1})" for t in markers)
        return (f"Do these tasks from `{file}`, and remove each comment when it is done:\n{lines}",
                markers[0].text)
    task = todos.task_from_comments(text, start, end)
    if not task:
        raise NoTask(
            f"No instruction given and no TODO or comment in or above lines {start + 1}-{end + 1} "
            f"of {file}: give an instruction, or write the task as a comment there.")
    return task, task.splitlines()[0]


def todo_range(text: str, todo: todos.Todo, encoding: str) -> dict[str, Any]:
    """A TODO's range in the client's position encoding."""
    lines = todos.split_lines(text)
    return {"start": {"line": todo.line, "character": units(lines[todo.line][: todo.column], encoding)},
            "end": {"line": todo.end_line,
                    "character": units(lines[todo.end_line][: todo.end_column], encoding)}}


def format_diagnostics(diagnostics: list[Any] | None, rng: Mapping[str, Any] | None) -> list[str]:
    """Diagnostics the client reported in the range, as lines for the brief (not our own)."""
    start, end = line_span(rng)
    out = []
    for d in diagnostics or []:
        if isinstance(d, str):
            out.append(d)
            continue
        if not isinstance(d, Mapping) or d.get("source") == "handoff":
            continue
        line = int(((d.get("range") or {}).get("start") or {}).get("line", start))
        if rng and not start <= line <= end:
            continue
        sev = _SEVERITY.get(d.get("severity") or 1, "error")
        src = f"[{d['source']}] " if d.get("source") else ""
        code = f" ({d['code']})" if d.get("code") not in (None, "") else ""
        out.append(f"line {line + 1}: {sev}: {src}{d.get('message', '')}{code}")
    return out


async def current_text(ls: "HandoffServer", repo: Repo, uri: str, file: str) -> str:
    """The file as the developer sees it: the open buffer, else the disk."""
    doc = ls.workspace.text_documents.get(uri)
    if doc is not None:
        return doc.source
    data = await anyio.to_thread.run_sync(repo.manager.read_disk, file)
    if data is None:
        raise NoTask(f"{file} does not exist on disk and is not open in the editor")
    return data.decode("utf-8", "replace")


async def delegate(
    ls: "HandoffServer",
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
    if not instruction:
        text = await current_text(ls, repo, uri, file)
        instruction, derived = task_of(text, rng, file)
        title = title or derived
    overlays = await ls.repos.overlays(repo)
    repo.manager.config = await ls.settings.config_for(repo.root)  # .handoff.toml may have changed
    req = DelegateRequest(
        instruction=instruction, file=file, uri=uri, range=dict(rng) if rng else None,
        overlays=overlays, agent=agent or None, diagnostics=format_diagnostics(diagnostics, rng),
        title=title_of(title) if title else None,
    )
    session = repo.manager.delegate(req)
    log.info("session %s: %s (%s, %d overlays)", session.id, session.title, file, len(overlays))
    return session


def title_of(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= 72 else first[:71] + "…"
