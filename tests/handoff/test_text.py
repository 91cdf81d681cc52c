"""handoff.text: lines as LSP counts them (never str.splitlines), units, spans, short forms."""

from __future__ import annotations

from handoff import text


def test_lines_split_only_where_lsp_ends_a_line():
    s = "a\fb\u2028c\x85d\r\ne\rf\ng"
    assert text.split_lines(s) == ["a\fb\u2028c\x85d", "e", "f", "g"]
    assert text.split_keepends(s) == ["a\fb\u2028c\x85d\r\n", "e\r", "f\n", "g"]
    assert text.split_keepends("x\n\fy\n") == ["x\n", "\fy\n"]  # the fast path too
    assert text.split_lines("x\n") == ["x", ""] and text.split_keepends("") == []


def test_units_count_code_units_of_the_encoding():
    s = "a😀é"
    assert (text.units(s, "utf-16"), text.units(s, "utf-8"), text.units(s, "utf-32")) == (4, 7, 3)


def test_line_span_leaves_out_an_end_at_column_zero():
    rng = {"start": {"line": 2, "character": 0}, "end": {"line": 5, "character": 0}}
    assert text.line_span(rng) == (2, 4)
    assert text.line_span({"start": {"line": 3, "character": 1}, "end": {"line": 3}}) == (3, 3)
    assert text.line_span(None) == (0, 0)


def test_short_forms():
    assert text.clip("abcdefghij", 5) == "ab…ij"
    assert text.shorten("abcdef", 4) == "abc…" and text.shorten("abc", 4) == "abc"
    assert text.title_of("\n  fix the cart \nmore") == "fix the cart"
    assert len(text.title_of("x" * 100)) == 72
