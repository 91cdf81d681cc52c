"""Three-way merge of an agent's result into the files as they are now.

base = the snapshot the agent started from, ours = the current content (buffer or disk),
theirs = the agent's result. Text merges go through ``git merge-file``; conflicts are reported
as line regions of *ours*, which is what the developer has in front of them.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from typing import Literal

from handoff import files, linediff

from . import gitops
from .gitops import FileChange

_MARK_CHARS = (b"<", b"|", b"=", b">")
_MARKERS = re.compile(rb"^([<|=>])\1{6,}", re.MULTILINE)


@dataclasses.dataclass
class ConflictRegion:
    start: int  # 0-based line index into ours
    end: int  # exclusive; start == end for a conflict at a point between lines


@dataclasses.dataclass
class MergeResult:
    text: bytes  # the merge; where it conflicts, ours' side is kept
    conflicts: list[ConflictRegion]
    with_markers: bytes  # the merge with diff3 conflict markers (binary: ours)

    @property
    def clean(self) -> bool:
        return not self.conflicts


@dataclasses.dataclass
class FileMerge:
    path: str
    action: Literal["write", "create", "delete", "rename", "unchanged", "conflict"]
    content: bytes | None  # what to write; for a conflict the content with markers, if any
    conflicts: list[ConflictRegion]
    old_path: str | None = None
    reason: str = ""
    # git mode the file gets ("100644", "100755", "120000": a symbolic link whose target is
    # ``content``); None leaves the mode as it is
    mode: str | None = None
    current_mode: str | None = None  # what was on disk when merged (None: nothing, or unknown)
    resolved: bytes | None = None  # a text conflict: the merge with ours kept where it conflicts

    @property
    def link(self) -> bool:
        """Whether applying it makes or replaces a symbolic link (never a text edit)."""
        return files.SYMLINK in (self.mode, self.current_mode)


def _lines(data: bytes) -> list[bytes]:
    """Split on b"\\n" only (as git does), keeping the line ends."""
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _is_binary(*blobs: bytes) -> bool:
    return any(b"\0" in b[:8000] for b in blobs)


def _merge_file(
    ours: bytes, base: bytes, theirs: bytes, labels: tuple[str, str, str], *extra: str
) -> tuple[bytes, int]:
    return gitops.merge_file(ours, base, theirs, labels, *extra)


def merge3(
    base: bytes,
    ours: bytes,
    theirs: bytes,
    *,
    labels: tuple[str, str, str] = ("current", "base", "agent"),
) -> MergeResult:
    """Merge ``theirs`` into ``ours`` relative to ``base``."""
    if ours == theirs or theirs == base:
        return MergeResult(ours, [], ours)
    if ours == base:
        return MergeResult(theirs, [], theirs)
    if _is_binary(base, ours, theirs):
        return MergeResult(ours, [ConflictRegion(0, len(_lines(ours)))], ours)
    with_markers, count = _merge_file(ours, base, theirs, labels)
    if count == 0:
        return MergeResult(with_markers, [], with_markers)
    # Parse with markers longer than any marker-like line in the inputs, so content that
    # itself looks like a conflict is never mistaken for one.
    longest = max(
        (len(m.group(0)) for b in (base, ours, theirs) for m in _MARKERS.finditer(b)), default=0
    )
    size = max(7, longest + 1)
    parsed = (
        with_markers
        if size == 7
        else _merge_file(ours, base, theirs, labels, f"--marker-size={size}")[0]
    )
    regions, merged = _regions(parsed, ours, size)
    if not ours.endswith(b"\n"):
        # git ends a conflict side's last line with a line end before the next marker: only
        # its own --ours run gives the exact bytes then; otherwise the sides are verbatim
        merged = _merge_file(ours, base, theirs, labels, "--ours")[0]
    return MergeResult(merged, regions, with_markers)


def _regions(marked: bytes, ours: bytes, size: int) -> tuple[list[ConflictRegion], bytes]:
    """Conflict regions in ours' lines, from merge output with markers of ``size``, and the
    merge with every conflict resolved to ours' side."""
    merged: list[bytes] = []  # the merge with every conflict resolved to ours
    spans: list[tuple[int, list[bytes]]] = []  # (start in ``merged``, ours' side)
    side: str | None = None  # None outside a conflict, else "ours" / "other"
    chunk: list[bytes] = []
    for line in _lines(marked):
        first = line[:1]
        mark = first[0] if first in _MARK_CHARS and line.startswith(first * size) else None
        if side is None and mark == ord("<"):
            side, chunk = "ours", []
        elif side == "ours" and mark in (ord("|"), ord("=")):
            side = "other"
        elif side == "other" and mark == ord(">"):
            spans.append((len(merged), chunk))
            merged.extend(chunk)
            side = None
        elif side == "ours":
            chunk.append(line)
        elif side is None:
            merged.append(line)
    return _map_to_ours(merged, spans, _lines(ours)), b"".join(merged)


def _norm(line: bytes) -> bytes:
    return line.rstrip(b"\r\n")


def _map_to_ours(
    merged: list[bytes], spans: list[tuple[int, list[bytes]]], ours: list[bytes]
) -> list[ConflictRegion]:
    """Map spans of ``merged`` (whose conflict parts are verbatim ours) to ours' lines."""
    a = [_norm(x) for x in ours]
    b = [_norm(x) for x in merged]
    opcodes = linediff.opcodes(a, b)  # not quadratic in repeated lines (a big file has many)

    starts = [op[3] for op in opcodes]

    def point(j: int) -> int:
        k = bisect.bisect_right(starts, j) - 1
        while 0 <= k < len(opcodes):  # the opcode whose b-range holds j (empty ones skipped)
            tag, i1, _i2, j1, j2 = opcodes[k]
            if j1 <= j < j2:
                return i1 + (j - j1) if tag == "equal" else i1
            if j1 > j:
                break
            k += 1
        return len(a)

    regions: list[ConflictRegion] = []
    floor = 0
    for start, chunk in spans:
        want = [_norm(x) for x in chunk]
        s = max(point(start), floor)
        if a[s : s + len(want)] != want:  # the matcher aligned elsewhere: search nearby
            s = _find(a, want, s, floor)
        regions.append(ConflictRegion(s, s + len(want)))
        floor = s + len(want)
    return regions


def _find(a: list[bytes], want: list[bytes], guess: int, floor: int) -> int:
    """The occurrence of ``want`` in ``a`` at or after ``floor`` closest to ``guess``."""
    if not want:
        return guess
    hits = [i for i in range(floor, len(a) - len(want) + 1) if a[i : i + len(want)] == want]
    return min(hits, key=lambda i: abs(i - guess)) if hits else guess


def merge_change(
    change: FileChange,
    base: bytes | None,
    ours: bytes | None,
    theirs: bytes | None,
    ours_mode: str | None = None,
) -> FileMerge:
    """Decide what to do with one file the agent changed, given what it is now (``ours``, of
    git mode ``ours_mode``: for a symbolic link its target). The agent's modes come with
    ``change``: a new executable bit is kept, symbolic links are made as links."""
    cur = ours_mode or (change.old_mode or files.REGULAR) if ours is not None else None
    if files.SYMLINK in (change.old_mode, change.new_mode, cur):
        fm = _merge_entry(change, base, ours, theirs, cur)
    else:
        fm = _with_mode(_merge_content(change, base, ours, theirs), change, ours, cur)
    fm.current_mode = cur
    return fm


def _with_mode(fm: FileMerge, change: FileChange, ours: bytes | None, cur: str | None) -> FileMerge:
    """The content merge ``fm`` carrying the executable bit: the agent's where it changed it."""
    changed = change.new_mode and change.new_mode != change.old_mode
    if fm.action == "create" or (fm.action == "rename" and changed):
        fm.mode = change.new_mode or files.REGULAR
    elif fm.action == "rename":
        fm.mode = cur  # the file moves with the mode it has now
    elif changed and cur != change.new_mode and fm.action in ("write", "unchanged"):
        if fm.action == "unchanged":  # only the mode changed: the same content, a new mode
            fm = FileMerge(fm.path, "write", ours, [], None, "")
        fm.mode = change.new_mode
    return fm


def _merge_entry(
    change: FileChange,
    base: bytes | None,
    ours: bytes | None,
    theirs: bytes | None,
    cur: str | None,
) -> FileMerge:
    """A change that makes, changes or removes a symbolic link: no line merge, the agent's
    entry is taken where the file is still what the agent started from."""
    path, old = change.path, change.old_path
    was = (change.old_mode or None, base if change.old_mode else None)
    now = (cur, ours)
    new = (change.new_mode or None, theirs if change.new_mode else None)
    where = old if change.status == "renamed" and old else path

    def conflict(reason: str) -> FileMerge:
        n = len(_lines(ours)) if ours is not None and cur != files.SYMLINK else 0
        return FileMerge(path, "conflict", None, [ConflictRegion(0, n)], old, reason)

    if change.new_mode == files.SYMLINK and files.link_leaves(path, theirs or b""):
        target = (theirs or b"").decode("utf-8", "replace")
        return conflict(
            f"The agent made {path} a symbolic link to {target!r}, outside the "
            "repository; it was not applied."
        )
    if change.status != "renamed" and now == new:
        return FileMerge(path, "unchanged", None, [])
    if change.status == "added":
        if ours is None:
            return FileMerge(path, "create", theirs, [], mode=change.new_mode)
        return conflict(f"{path} exists already with other content than the agent created.")
    if now != was:
        what = "deleted" if change.status == "deleted" else "changed"
        return conflict(
            f"The agent {what} {where}, but it was changed meanwhile"
            + (" (a symbolic link is never merged line by line)." if cur else ".")
        )
    if change.status == "deleted":
        return FileMerge(path, "delete", None, [])
    action: Literal["rename", "write"] = "rename" if change.status == "renamed" else "write"
    return FileMerge(
        path, action, theirs, [], old if action == "rename" else None, mode=change.new_mode
    )


def _merge_content(
    change: FileChange, base: bytes | None, ours: bytes | None, theirs: bytes | None
) -> FileMerge:
    """The three-way content merge of a regular file."""
    path, old = change.path, change.old_path
    whole = [ConflictRegion(0, len(_lines(ours)))] if ours is not None else []

    def conflict(
        reason: str,
        content: bytes | None = None,
        regions: list[ConflictRegion] | None = None,
        resolved: bytes | None = None,
    ) -> FileMerge:
        return FileMerge(
            path,
            "conflict",
            content,
            whole if regions is None else regions,
            old,
            reason,
            resolved=resolved,
        )

    if change.status == "added":
        if ours is None:
            return FileMerge(path, "create", theirs, [], None, "")
        if ours == theirs:
            return FileMerge(path, "unchanged", None, [], None, "")
        content = (
            None
            if _is_binary(ours, theirs or b"")
            else merge3(b"", ours, theirs or b"").with_markers
        )
        return conflict(
            f"{path} exists already with other content than the agent created.", content
        )
    if change.status == "deleted":
        if ours is None:
            return FileMerge(path, "unchanged", None, [], None, "")
        if ours == base:
            return FileMerge(path, "delete", None, [], None, "")
        return conflict(f"The agent deleted {path}, but it was changed meanwhile.")
    # modified or renamed: the content is merged either way
    where = old if change.status == "renamed" and old else path
    if ours is None:
        return conflict(f"The agent changed {where}, but it was deleted meanwhile.")
    result = merge3(base or b"", ours, theirs if theirs is not None else b"")
    if not result.clean:
        n = len(result.conflicts)
        return conflict(
            f"The agent's changes to {where} conflict with edits made meanwhile "
            f"({n} conflicting region{'s' if n != 1 else ''}).",
            result.with_markers,
            result.conflicts,
            result.text,
        )
    if change.status == "renamed":
        return FileMerge(path, "rename", result.text, [], old, "")
    if result.text == ours:
        return FileMerge(path, "unchanged", None, [], None, "")
    return FileMerge(path, "write", result.text, [], None, "")
