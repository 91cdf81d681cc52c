"""Ranges that follow the text: a session's origin and its conflict regions (pure functions).

When the developer inserts or deletes lines above a range, the range moves with its text; an edit
inside it grows or shrinks it. Positions are LSP positions in the client's encoding.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from typing import Any

from handoff import linediff
from handoff.text import split_lines, units


@dataclasses.dataclass
class Anchor:
    uri: str
    session_id: str
    start: tuple[int, int]  # (line, character)
    end: tuple[int, int]
    kind: str = "origin"  # "origin", "conflict" or "hunk"
    message: str = ""
    key: str = ""  # a hunk's id

    @classmethod
    def from_range(cls, uri: str, session_id: str, rng: dict[str, Any] | None, **kw) -> Anchor:
        rng = rng or {}
        s, e = rng.get("start") or {}, rng.get("end") or rng.get("start") or {}
        start = (int(s.get("line", 0)), int(s.get("character", 0)))
        end = (int(e.get("line", start[0])), int(e.get("character", start[1])))
        return cls(uri, session_id, start, max(start, end), **kw)

    def as_range(self) -> dict[str, Any]:
        return {
            "start": {"line": self.start[0], "character": self.start[1]},
            "end": {"line": self.end[0], "character": self.end[1]},
        }


def _after(
    pos: tuple[int, int],
    start: tuple[int, int],
    end: tuple[int, int],
    text: str,
    encoding: str,
    *,
    is_end: bool,
) -> tuple[int, int]:
    """Where ``pos`` is after ``start..end`` was replaced with ``text``.

    Text inserted exactly at ``pos`` goes before it (lines typed above an origin push it down);
    a position inside a replaced span moves to the span's start (a range start) or its new end
    (a range end)."""
    if pos < start or (pos == start and start != end):
        return pos
    pieces = split_lines(text)
    new_end = (
        start[0] + len(pieces) - 1,
        (start[1] if len(pieces) == 1 else 0) + units(pieces[-1], encoding),
    )
    if pos < end:
        return new_end if is_end else start
    if pos[0] == end[0]:
        return (new_end[0], new_end[1] + pos[1] - end[1])
    return (pos[0] + new_end[0] - end[0], pos[1])


def shift(
    anchor: Anchor,
    start: tuple[int, int],
    end: tuple[int, int],
    text: str,
    encoding: str = "utf-16",
) -> bool:
    """Move ``anchor`` for one incremental change; True when it moved."""
    before = (anchor.start, anchor.end)
    a_start = _after(anchor.start, start, end, text, encoding, is_end=False)
    a_end = _after(anchor.end, start, end, text, encoding, is_end=anchor.end > anchor.start)
    anchor.start, anchor.end = a_start, max(a_start, a_end)
    return (anchor.start, anchor.end) != before


def remap(anchor: Anchor, old: str, new: str) -> bool:
    """Move ``anchor`` for a whole-document change, by the line diff of ``old`` and ``new``."""
    return remap_all([anchor], old, new)


def remap_all(anchors: list[Anchor], old: str, new: str) -> bool:
    """``remap`` for every anchor of one document, with one line diff; True when any moved."""
    a, b = split_lines(old), split_lines(new)
    ops = linediff.opcodes(a, b)  # not quadratic in repeated lines: a big file has many
    starts = [op[1] for op in ops]

    def line(n: int) -> int:
        k = max(0, bisect.bisect_right(starts, n) - 1)
        for tag, i1, i2, j1, _j2 in itertools.islice(ops, max(0, k - 1), None):
            if i1 <= n < i2:
                return j1 + (n - i1) if tag == "equal" else j1
            if i1 > n:
                break
        return len(b) - 1 if n >= len(a) else n

    moved = False
    for anchor in anchors:
        before = (anchor.start, anchor.end)
        anchor.start = (line(anchor.start[0]), anchor.start[1])
        anchor.end = max(anchor.start, (line(anchor.end[0]), anchor.end[1]))
        moved |= (anchor.start, anchor.end) != before
    return moved
