"""Text as LSP counts it: lines, position units, the lines a range spans, short forms.

The one place lines are split (both sides import it): LSP ends a line at ``\\n``, ``\\r\\n`` or
``\\r`` and nowhere else. ``str.splitlines`` also splits at form feeds, ``\\v``, ``\\x1c``-``\\x1e``,
``\\x85``, U+2028 and U+2029, so a line number counted with it lands on the wrong line of a file
holding one of those; never use it for positions. Columns are counted in the code units of the
negotiated position encoding (:func:`units`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_EOL = re.compile(r"\r\n|\r|\n")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
TITLE_LIMIT = 72  # characters of a session's title


def split_lines(text: str) -> list[str]:
    """The lines of ``text`` without their terminators, as LSP counts them (a text ending with
    a line end has an empty last line; ``""`` is one empty line)."""
    return _EOL.split(text)


def split_keepends(text: str) -> list[str]:
    """Lines with their terminators, split where LSP splits (``\\n``, ``\\r\\n``, ``\\r``);
    an empty text has none."""
    if "\r" in text:
        return _LINE.findall(text)
    parts = text.split("\n")  # the common case, several times faster on a big file
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def count_breaks(text: str, start: int = 0, end: int | None = None) -> int:
    """How many line breaks (``\r\n``, ``\r`` or ``\n``) ``text[start:end]`` holds, counted
    in C without a copy (a 10 MB text takes milliseconds)."""
    end = len(text) if end is None else end
    cr = text.count("\r", start, end)
    return text.count("\n", start, end) + cr - (text.count("\r\n", start, end) if cr else 0)


def body(line: str) -> str:
    """A line of :func:`split_keepends` without its terminator."""
    return line.rstrip("\r\n")


def eol_of(text: str, default: str = "\n") -> str:
    """The line end ``text`` uses (the first kind found: ``\\r\\n``, ``\\n``, ``\\r``)."""
    return next((e for e in ("\r\n", "\n", "\r") if e in text), default)


def units(s: str, encoding: str) -> int:
    """Length of ``s`` in the code units of ``encoding`` (``utf-8``, ``utf-16``, ``utf-32``:
    LSP column arithmetic; anything else counts as UTF-16, LSP's default)."""
    if encoding == "utf-8":
        return len(s.encode("utf-8", "surrogatepass"))
    if encoding == "utf-32":
        return len(s)
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def line_span(rng: Mapping[str, Any] | None) -> tuple[int, int]:
    """First and last line an LSP range (as JSON) covers: an end at column 0 of a later line
    leaves that line out (a selection of whole lines ends there). No range: ``(0, 0)``."""
    if not rng:
        return 0, 0
    start, end = int(rng["start"]["line"]), int(rng["end"]["line"])
    if end > start and int(rng["end"].get("character", 0)) == 0:
        end -= 1
    return start, max(start, end)


def clip(value: object, limit: int = 80) -> str:
    """``value`` as text shortened to about ``limit`` characters (head … tail), for messages
    that name a path or a uri (both ends say something)."""
    text = str(value)
    if len(text) <= limit:
        return text
    half = max(1, (limit - 1) // 2)
    return f"{text[:half]}…{text[-half:]}"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def title_of(text: str, limit: int = TITLE_LIMIT) -> str:
    """The first non-blank line of ``text``, stripped and shortened: a session's title."""
    first = next((line.strip() for line in split_lines(text) if line.strip()), "")
    return shorten(first, limit)
