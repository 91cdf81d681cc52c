"""A session's report: state, summary, the transcript in brief, then the unified diff of its
result (what ``handoff.show`` opens in the editor and ``handoff show`` prints)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handoff.files import atomic_write

from .session import Session

if TYPE_CHECKING:
    from .manager import SessionManager

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


def render(mgr: SessionManager, s: Session) -> str:
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
    events = mgr.store.read_transcript(s.id)
    if events:
        lines.append(f"# transcript ({len(events)} events, last {min(len(events), SHOWN_EVENTS)}):")
        lines += [_event_line(e) for e in events[-SHOWN_EVENTS:]]
    diff = mgr.diff(s.id) if s.resultCommit else ""
    lines.append("#")
    lines.append(diff if diff else "# (no changes yet)")
    return "\n".join(lines) + "\n"


def write(mgr: SessionManager, s: Session) -> Path:
    """The report written to ``session.diff`` in the session's folder (blocking)."""
    path = mgr.store.session_dir(s.id) / "session.diff"
    atomic_write(path, render(mgr, s).encode("utf-8"))
    return path
