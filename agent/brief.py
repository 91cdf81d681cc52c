"""The task brief (``task.md``) every agent gets, built from what the developer sees."""

from __future__ import annotations

import dataclasses
from typing import Any

from handoff.text import body, line_span, split_keepends

CONTEXT_LINES = 30  # lines of surroundings on each side of the selection
MAX_GUIDE_CHARS = 8000  # AGENTS.md / CLAUDE.md are included up to this size


@dataclasses.dataclass
class Origin:
    """Where the work was delegated from, with the text as the developer saw it."""

    file: str | None = None  # repository-relative posix path
    range: dict[str, Any] | None = None  # LSP range, 0-based
    text: str | None = None  # the whole file as it was in the snapshot
    diagnostics: list[str] = dataclasses.field(default_factory=list)


def _numbered(lines: list[str], first: int) -> str:
    return "\n".join(f"{first + i + 1:>5}  {line}" for i, line in enumerate(lines))


def range_label(rng: dict[str, Any] | None) -> str:
    """``startLine:startCol-endLine:endCol``, 0-based, as in HANDOFF_RANGE."""
    if not rng:
        return ""
    s, e = rng["start"], rng["end"]
    return f"{s['line']}:{s.get('character', 0)}-{e['line']}:{e.get('character', 0)}"


def build_brief(
    instruction: str,
    origin: Origin,
    *,
    test_command: str | None = None,
    guide: tuple[str, str] | None = None,  # (file name, text) of AGENTS.md / CLAUDE.md
    submodules: list[str] | tuple[str, ...] = (),  # paths of the repository's git submodules
) -> str:
    parts = ["# Task", "", instruction.strip() or "(no instruction given)", ""]
    if origin.file:
        parts += ["## Where", "", f"File: `{origin.file}`"]
        if origin.range and origin.text is not None:
            lines = [body(line) for line in split_keepends(origin.text)]  # LSP lines, no last ""
            start, end = line_span(origin.range)
            parts.append(f"Lines {start + 1}-{end + 1} (1-based).")
            parts += ["", "Selected text:", "", "```", *lines[start : end + 1], "```"]
            lo, hi = max(0, start - CONTEXT_LINES), min(len(lines), end + 1 + CONTEXT_LINES)
            parts += [
                "",
                f"Surroundings (lines {lo + 1}-{hi}, numbered):",
                "",
                "```",
                _numbered(lines[lo:hi], lo),
                "```",
            ]
        parts.append("")
    if origin.diagnostics:
        parts += ["## Diagnostics in the range", ""]
        parts += [f"- {d}" for d in origin.diagnostics]
        parts.append("")
    if test_command:
        parts += ["## Checking your work", "", f"The project's test command: `{test_command}`", ""]
    if guide:
        name, text = guide
        parts += [f"## Project guide ({name})", "", text[:MAX_GUIDE_CHARS], ""]
    parts += [
        "## Notes",
        "",
        "- You work in a git worktree made from a snapshot of what the developer sees: it",
        "  includes their uncommitted and unsaved work. Change only what the task needs.",
        "- Your changes come back to the developer as edits they review; do not commit.",
    ]
    if submodules:
        shown = ", ".join(f"`{p}`" for p in submodules[:20]) + (
            ", ..." if len(submodules) > 20 else ""
        )
        parts += [
            f"- This repository has git submodules ({shown}): their folders are empty in your",
            "  worktree (their contents are not checked out), and changes inside them do not come",
            "  back. Work around them; say so in your summary if the task needs them.",
        ]
    parts.append("")
    return "\n".join(parts)
