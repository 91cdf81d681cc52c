"""TODO / FIXME / XXX comments, and the comments that describe a task (pure functions).

Recognised comment syntaxes: ``#``, ``//`` (and ``///``, ``//!``), ``--``, ``;``, ``/* */`` and
``<!-- -->``, block comments across lines included. A marker counts when it is the first word of
a comment (``# TODO: x``, ``// FIXME(bob) x``, `` * XXX x`` inside a block comment), so prose that
merely mentions a TODO is not a task. ``TODO(agent): ...`` is an explicit marker for the agent.

A marker's text continues on the following comment lines of the same kind when they are indented
further (the "hanging indent" convention)::

    # TODO(agent): validate the arguments
    #   and raise ValueError on bad input

Lines are split as LSP splits them (``\\n``, ``\\r\\n``, ``\\r``); columns are Python string
indices (code points), which the caller converts to the client's position encoding.
"""

from __future__ import annotations

import dataclasses
import re

from handoff.text import count_breaks, split_lines

MARKERS = ("TODO", "FIXME", "XXX")
AGENT_OWNER = "agent"

# What may stand between the start of a comment and its first word.
_LINE_OPENERS = [
    ("//", re.compile(r"//+[!/]?")),
    ("#", re.compile(r"#+!?")),
    ("--", re.compile(r"--+")),
    (";", re.compile(r";+")),
]
_MARKER = re.compile(
    r"(?P<tag>TODO|FIXME|XXX)\b(?:\((?P<owner>[^)\n]*)\))?\s*[:\-]?\s*(?P<text>.*)$"
)
_BLOCK_END = {"/*": "*/", "<!--": "-->"}
_DIRECTIVE = re.compile(
    r"#\s*(include|define|undef|if|ifdef|ifndef|elif|else|endif|pragma|error|warning|line|import|region|endregion)\b"
)


@dataclasses.dataclass(frozen=True)
class Comment:
    """The comment part of one line."""

    line: int
    start: int  # column where the comment opener (or the block text) starts
    text_start: int  # column of the first character of the comment's text
    text: str  # the comment's text on this line, without opener / closer, right-stripped
    kind: str  # "#", "//", "--", ";", "/*", "<!--"
    opener: str  # the opener exactly as written ("" on a continuation line of a block)


@dataclasses.dataclass(frozen=True)
class Todo:
    line: int  # 0-based line of the marker
    column: int  # column of the marker word
    end_line: int  # last line of the text (continuation lines included)
    end_column: int  # column after the last character of the comment on end_line
    tag: str  # TODO, FIXME or XXX
    owner: str | None  # "agent" in TODO(agent), None without parentheses
    text: str  # the task: the text after the marker, continuation lines joined

    @property
    def for_agent(self) -> bool:
        return (self.owner or "").strip().lower() == AGENT_OWNER

    def contains_line(self, line: int) -> bool:
        return self.line <= line <= self.end_line


def _string_spans(line: str) -> list[tuple[int, int]]:
    """Spans of simple one-line string literals ('...', "...", `...`) in ``line``."""
    spans, i, n = [], 0, len(line)
    while i < n:
        ch = line[i]
        if ch in "\"'`":
            j = i + 1
            while j < n and line[j] != ch:
                j += 2 if line[j] == "\\" else 1
            spans.append((i, min(j, n)))
            i = j + 1
        else:
            i += 1
    return spans


def _in_string(col: int, spans: list[tuple[int, int]]) -> bool:
    return any(a < col <= b for a, b in spans)


def comments(text: str) -> list[Comment]:
    """Every comment of ``text``, one entry per line that holds comment text."""
    found: list[Comment] = []
    block: str | None = None  # the open block comment's opener, if inside one
    for no, line in enumerate(split_lines(text)):
        col = 0
        while col <= len(line):
            if block is not None:  # inside a block comment: up to its end on this line
                close = line.find(_BLOCK_END[block], col)
                stop = len(line) if close < 0 else close
                body = line[col:stop]
                lead = len(body) - len(body.lstrip())
                star = re.match(r"\*+(?!/)\s*", body[lead:]) if block == "/*" else None
                skip = lead + (star.end() if star else 0)
                if body.strip(" \t*"):
                    found.append(Comment(no, col, col + skip, body[skip:].rstrip(), block, ""))
                if close < 0:
                    break
                col, block = close + len(_BLOCK_END[block]), None
                continue
            hit = _next_opener(line, col)
            if hit is None:
                break
            start, kind, opener = hit
            if kind in _BLOCK_END:
                block = kind
                body_start = start + len(opener)
                close = line.find(_BLOCK_END[kind], body_start)
                stop = len(line) if close < 0 else close
                body = line[body_start:stop]
                lead = len(body) - len(body.lstrip())
                if body.strip():
                    found.append(Comment(no, start, body_start + lead, body.strip(), kind, opener))
                if close < 0:
                    break
                col, block = close + len(_BLOCK_END[kind]), None
                continue
            body = line[start + len(opener) :]
            lead = len(body) - len(body.lstrip())
            found.append(Comment(no, start, start + len(opener) + lead, body.strip(), kind, opener))
            break
    return found


def _next_opener(line: str, col: int) -> tuple[int, str, str] | None:
    """The first comment opener at or after ``col`` that is not inside a string literal."""
    spans = _string_spans(line)
    best: tuple[int, str, str] | None = None
    for kind in ("<!--", "/*"):
        i = line.find(kind, col)
        while i >= 0 and _in_string(i, spans):
            i = line.find(kind, i + 1)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, kind, kind)
    for kind, rx in _LINE_OPENERS:
        for m in rx.finditer(line, col):
            i = m.start()
            if _in_string(i, spans) or not _plausible(line, i, kind):
                continue
            if best is None or i < best[0]:
                best = (i, kind, m.group(0))
            break
    return best


def _plausible(line: str, i: int, kind: str) -> bool:
    """Rule out openers that are code: ``i--``, ``a;b``, ``x#y``, ``<!--`` handled apart."""
    before = line[:i]
    if kind == "--":  # "i--", "--x" as code; a comment's "--" is followed by a space or end
        after = line[i + 2 : i + 3]
        return (not before.rstrip() or before.endswith((" ", "\t"))) and after in (
            "",
            " ",
            "\t",
            "-",
        )
    if kind == ";":  # statement ends are code; a comment is at line start or after whitespace
        return not before.strip() or before.endswith((" ", "\t"))
    if kind == "#":  # "#" inside a word ("C#", a URL fragment) or a C directive is no comment
        if not before.strip() and _DIRECTIVE.match(line, i):
            return False
        return not before or not (before[-1].isalnum() or before[-1] in "&/")
    if kind == "//":  # "http://" is not a comment
        return not before.endswith(":")
    return True


BIG = 1 << 18  # characters: a bigger text is scanned only around its markers
_WINDOW_LINES = 200  # lines after a marker a window keeps (its continuation lines)


def find_todos(text: str) -> list[Todo]:
    """Every TODO / FIXME / XXX comment of ``text``, in order. A text with no marker at all
    costs a search; a big one is scanned only in windows around its markers (each from a line
    outside any block comment), so code actions and opening a 10 MB file never scan it all."""
    if not any(m in text for m in MARKERS):
        return []
    if len(text) <= BIG:
        return _find_todos(text)
    found: dict[tuple[int, int], Todo] = {}
    first, counted = 0, 0
    for start, end in _windows(text):  # in order: the lines before each counted once
        first, counted = first + count_breaks(text, counted, start), start
        for t in _find_todos(text[start:end]):
            t = dataclasses.replace(t, line=t.line + first, end_line=t.end_line + first)
            found.setdefault((t.line, t.column), t)
    return [found[k] for k in sorted(found)]


def _line_start(text: str, pos: int) -> int:
    return max(text.rfind("\n", 0, pos), text.rfind("\r", 0, pos)) + 1


def _windows(text: str) -> list[tuple[int, int]]:
    """Spans of ``text`` (from a line start) around every marker, merged where they overlap."""
    spans: list[tuple[int, int]] = []
    blocks = [(o, c) for o, c in _BLOCK_END.items() if o in text]
    for marker in MARKERS:
        pos = text.find(marker)
        while pos >= 0:
            start = _line_start(text, pos)
            for opener, closer in blocks:  # inside a block comment: from its start
                o = text.rfind(opener, 0, pos)
                if o >= 0 and text.find(closer, o + len(opener), pos) < 0:
                    start = min(start, _line_start(text, o))
            end = pos
            for _ in range(_WINDOW_LINES):
                nl = text.find("\n", end)
                if nl < 0:
                    end = len(text)
                    break
                end = nl + 1
            spans.append((start, end))
            pos = text.find(marker, end)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _find_todos(text: str) -> list[Todo]:
    cs = comments(text)
    todos: list[Todo] = []
    i = 0
    while i < len(cs):
        c = cs[i]
        m = _MARKER.match(c.text)
        if not m:
            i += 1
            continue
        owner = m.group("owner")
        parts = [_clean(m.group("text"), c.kind)]
        end_line, end_col = c.line, c.text_start + len(c.text)
        j = i + 1
        while j < len(cs) and _continues(c, cs[j], cs[j - 1].line):
            parts.append(_clean(cs[j].text, cs[j].kind))
            end_line, end_col = cs[j].line, cs[j].text_start + len(cs[j].text)
            j += 1
        todos.append(
            Todo(
                line=c.line,
                column=c.text_start,
                end_line=end_line,
                end_column=end_col,
                tag=m.group("tag"),
                owner=owner.strip() if owner is not None else None,
                text=" ".join(p for p in parts if p).strip(),
            )
        )
        i = j
    return todos


def _clean(text: str, kind: str) -> str:
    text = text.strip()
    for closer in ("*/", "-->"):
        if text.endswith(closer):
            text = text[: -len(closer)].rstrip()
    return text


def _continues(first: Comment, nxt: Comment, prev_line: int) -> bool:
    """Is ``nxt`` a continuation line of the marker comment ``first``?"""
    if nxt.line != prev_line + 1 or nxt.kind != first.kind or _MARKER.match(nxt.text):
        return False
    if not nxt.text:
        return False
    if first.kind in _BLOCK_END:  # inside the same block: indented further than the marker
        return nxt.opener == "" and nxt.text_start > first.text_start
    indent = nxt.text_start - (nxt.start + len(nxt.opener))
    return nxt.start == first.start and indent >= 2


def todo_at(text: str, line: int) -> Todo | None:
    """The marker comment covering ``line``, if any."""
    return next((t for t in find_todos(text) if t.contains_line(line)), None)


def todos_in(text: str, start_line: int, end_line: int) -> list[Todo]:
    """Markers that start or end within lines ``start_line``..``end_line`` (inclusive)."""
    return [t for t in find_todos(text) if t.line <= end_line and t.end_line >= start_line]


def task_from_comments(text: str, start_line: int, end_line: int) -> str | None:
    """The task a selection describes when no instruction is given.

    The TODO text(s) in the range win; else the comments inside the range; else the comment
    block right above the range (blank lines between them allowed). None when there is none.
    """
    markers = todos_in(text, start_line, end_line)
    if markers:
        return "\n".join(t.text for t in markers if t.text) or None
    cs = comments(text)
    inside = [c.text for c in cs if start_line <= c.line <= end_line and c.text]
    if inside:
        return "\n".join(_clean(t, "") for t in inside)
    lines = split_lines(text)
    by_line = {c.line: c for c in cs}
    above: list[str] = []
    no = start_line - 1
    while no >= 0 and not lines[no].strip() and not above:
        no -= 1  # blank lines between the comment and the selection
    while no >= 0 and no in by_line and not lines[no][: by_line[no].start].strip():
        if by_line[no].text:
            above.append(_clean(by_line[no].text, by_line[no].kind))
        no -= 1
    return "\n".join(reversed(above)) or None
