"""Ranges that follow the text: a session's origin and its conflict regions (pure functions).

When the developer inserts or deletes lines above a range, the range moves with its text; an edit
inside it grows or shrinks it. Positions are LSP positions in the client's encoding.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

from handoff import linediff
from handoff.text import count_breaks, split_lines, units


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


def _common_run(same: Callable[[int, int], bool], limit: int) -> int:
    """The largest ``n <= limit`` with ``same(0, n)``, where ``same(lo, hi)`` says whether the
    two texts agree from offset ``lo`` to ``hi``: compared in chunks that double (slices
    compare in C: a 10 MB document takes milliseconds), then halved inside the first chunk that
    differs."""
    lo, step = 0, 1 << 12
    while lo < limit:
        hi = min(limit, lo + step)
        if not same(lo, hi):
            while hi - lo > 1:  # a mismatch in lo..hi
                mid = (lo + hi) // 2
                if same(lo, mid):
                    lo = mid
                else:
                    hi = mid
            return lo
        lo, step = hi, min(step * 2, 1 << 20)
    return limit


def _common_prefix(a: str, b: str, limit: int) -> int:
    """The length of the longest common prefix of ``a`` and ``b`` (at most ``limit``)."""
    return _common_run(lambda lo, hi: a[lo:hi] == b[lo:hi], limit)


def _common_suffix(a: str, b: str, limit: int) -> int:
    """The length of the longest common suffix of ``a`` and ``b`` (at most ``limit``)."""
    la, lb = len(a), len(b)
    return _common_run(lambda lo, hi: a[la - hi : la - lo] == b[lb - hi : lb - lo], limit)


def _lines(text: str) -> list[str]:
    """The lines of ``text`` that end in it (a last line without a break counts too)."""
    pieces = split_lines(text)
    return pieces[:-1] if pieces[-1] == "" else pieces


BIG = 1 << 18  # characters of changed text: more, and the line diff runs in a worker thread


@dataclasses.dataclass
class Changed:
    """Where two texts differ, in whole lines: the first ``head`` lines alike, then the text
    ``old`` became ``new`` (whole lines), then the rest alike; ``old_lines`` / ``new_lines``:
    how many lines each text has (as ``split_lines`` counts them)."""

    head: int
    old: str
    new: str
    old_lines: int
    new_lines: int

    @property
    def big(self) -> bool:
        """Too much changed to diff on the event loop."""
        return len(self.old) + len(self.new) > BIG

    def ops(self) -> tuple[list[str], list[str], list[tuple[str, int, int, int, int]]]:
        """The changed lines of each side and their line diff (blocking when ``big``)."""
        a = _lines(self.old) if self.old else []
        b = _lines(self.new) if self.new else []
        return a, b, (linediff.opcodes(a, b) if a or b else [])  # not quadratic in repeats


def changed(old: str, new: str) -> Changed:
    """The lines where ``new`` differs from ``old``: the common head and tail taken off first,
    in whole lines, so a small edit of a big document diffs only the lines it touched (a few
    milliseconds for 10 MB: the comparisons and counts run in C)."""
    limit = min(len(old), len(new))
    p = _common_prefix(old, new, limit)
    # back to the start of a line (a `\r` last in the prefix may be half of a `\r\n`)
    cut = max(old.rfind("\n", 0, p), old.rfind("\r", 0, max(p - 1, 0))) + 1
    k = len(old) - _common_suffix(old, new, limit - cut)
    # forward to the start of a line: just after the first break in the common tail
    found = [x for x in (old.find("\n", k), old.find("\r", k)) if x >= 0]
    if found:
        k = min(found) + (2 if old.startswith("\r\n", min(found)) else 1)
    else:
        k = len(old)
    kb = len(new) - (len(old) - k)
    head, tail = count_breaks(old, 0, cut), count_breaks(old, k)
    return Changed(
        head,
        old[cut:k],
        new[cut:kb],
        head + count_breaks(old, cut, k) + tail + 1,
        head + count_breaks(new, cut, kb) + tail + 1,
    )


def remap_all(anchors: list[Anchor], old: str, new: str) -> bool:
    """``remap`` for every anchor of one document, with one line diff of the lines that changed;
    True when any moved."""
    ch = changed(old, new)
    return remap_changed(anchors, ch, ch.ops())


def remap_changed(
    anchors: list[Anchor],
    ch: Changed,
    diff: tuple[list[str], list[str], list[tuple[str, int, int, int, int]]],
) -> bool:
    """Move ``anchors`` by :func:`changed`'s answer and its :meth:`Changed.ops` (cheap: the
    diff is done); True when any moved."""
    a, b, ops = diff
    starts = [op[1] for op in ops]

    def line(n: int) -> int:
        if n < ch.head:
            return n
        if n >= ch.old_lines:
            return ch.new_lines - 1
        m = n - ch.head
        if m >= len(a):  # the common tail
            return min(n + len(b) - len(a), ch.new_lines - 1)
        k = max(0, bisect.bisect_right(starts, m) - 1)
        for tag, i1, i2, j1, _j2 in itertools.islice(ops, max(0, k - 1), None):
            if i1 <= m < i2:
                # a deletion at the end of the changed lines maps past them: onto the last line
                # when the document now ends there
                return min(ch.head + (j1 + (m - i1) if tag == "equal" else j1), ch.new_lines - 1)
            if i1 > m:
                break
        return min(ch.head + m, ch.new_lines - 1)

    moved = False
    for anchor in anchors:
        before = (anchor.start, anchor.end)
        anchor.start = (line(anchor.start[0]), anchor.start[1])
        anchor.end = max(anchor.start, (line(anchor.end[0]), anchor.end[1]))
        moved |= (anchor.start, anchor.end) != before
    return moved


Step = tuple  # ("full", old, new) | ("range", start, end, text): one change of a document


class Mover:
    """Moves each document's anchors with its changes, in order, never diffing much on the event
    loop: a whole-document change whose changed lines are many (:attr:`Changed.big`) is diffed
    in a worker thread (``spawn`` runs the coroutine), and that document's later changes wait
    for it, each applied to the anchors it was made over. ``on_moved(uri, anchors)`` is told
    whenever anchors moved."""

    def __init__(
        self,
        spawn: Callable[[Coroutine[Any, Any, None], str], Any],
        on_moved: Callable[[str, list[Anchor]], None],
    ) -> None:
        self._spawn = spawn
        self._on_moved = on_moved
        self._waiting: dict[str, list[tuple[list[Anchor], list[Step]]]] = {}

    def busy(self, uri: str) -> bool:
        return uri in self._waiting

    def move(self, uri: str, anchors: list[Anchor], steps: list[Step], encoding: str) -> None:
        if uri in self._waiting:  # a big diff of this document under way: after it
            self._waiting[uri].append((list(anchors), steps))
            return
        moved = False
        for i, step in enumerate(steps):
            if step[0] == "range":
                _, start, end, text = step
                for a in anchors:
                    moved |= shift(a, start, end, text, encoding)
                continue
            ch = changed(step[1], step[2])
            if ch.big:
                if moved:
                    self._on_moved(uri, anchors)
                self._waiting[uri] = []
                self._spawn(self._offloaded(uri, anchors, ch, steps[i + 1 :], encoding), uri)
                return
            moved |= remap_changed(anchors, ch, ch.ops())
        if moved:
            self._on_moved(uri, anchors)

    async def _offloaded(
        self, uri: str, anchors: list[Anchor], ch: Changed, rest: list[Step], encoding: str
    ) -> None:
        import anyio

        try:
            diff = await anyio.to_thread.run_sync(ch.ops)
            if remap_changed(anchors, ch, diff):
                self._on_moved(uri, anchors)
        finally:
            queued = [(anchors, rest), *self._waiting.pop(uri, [])]
            for group, steps in queued:  # in order; a big one among them waits again
                if steps:
                    self.move(uri, group, steps, encoding)
