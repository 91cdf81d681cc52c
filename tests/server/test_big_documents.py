"""Big documents cost the server's loop little: incremental edits without splitting the text,
whole-document changes diffed only where they changed (a big change in a worker thread, the
later edits after it, in order), one line of a document without splitting it, TODOs found
around their markers. Each checked against the slow way it replaces; then through the server."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from handoff.server import anchors, edits, todos
from lsprotocol import types
from pygls.workspace import PositionCodec, TextDocument

_EOL = re.compile(r"\r\n|\r|\n")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8"])
def test_incremental_edits_give_what_pygls_gives(encoding: str):
    codec = PositionCodec(types.PositionEncodingKind(encoding))
    rnd = random.Random(encoding)
    alphabet = ["a", "b", "é", "😀", "\n", "\r\n", " ", "x"]
    for _ in range(2000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 30)))
        lines = text.splitlines(True) or [""]
        l1 = rnd.randint(0, len(lines))
        l2 = rnd.randint(l1, len(lines))

        def column(n: int, lines: list[str] = lines) -> int:
            if n >= len(lines):
                return 0
            line = lines[n].rstrip("\r\n")
            return codec.client_num_units(line[: rnd.randint(0, len(line))])

        c1 = column(l1)
        c2 = column(l2) if l2 > l1 else max(c1, column(l2))
        change = types.TextDocumentContentChangePartial(
            range=types.Range(
                start=types.Position(line=l1, character=c1),
                end=types.Position(line=l2, character=c2),
            ),
            text=rnd.choice(["", "z", "\n", "q\nw"]),
        )
        doc = TextDocument("file:///x", text, position_codec=codec)
        doc.apply_change(change)
        assert edits.incremental(text, change, codec) == doc.source, (text, change)


def test_a_lone_cr_is_left_to_pygls():
    change = types.TextDocumentContentChangePartial(
        range=types.Range(
            start=types.Position(line=1, character=0), end=types.Position(line=1, character=0)
        ),
        text="x",
    )
    assert edits.incremental("a\rb\n", change, None) is None


def test_lines_are_split_keepends_without_the_split():
    from handoff.text import split_keepends

    rnd = random.Random(2)
    for _ in range(3000):
        text = "".join(
            rnd.choice(["a", "\n", "\r\n", "b", "\r", "\x0b", "é"])
            for _ in range(rnd.randint(0, 20))
        )
        expected = split_keepends(text)
        lines = edits.Lines(text)
        assert len(lines) == len(expected)
        assert [lines[i] for i in range(len(lines))] == expected


def _reference_lines(old: str, new: str, line: int) -> int:
    """Where the slow way (a line diff of the whole documents) puts ``line``."""
    from handoff import linediff

    a, b = _EOL.split(old), _EOL.split(new)
    for tag, i1, i2, j1, _ in linediff.opcodes(a, b):
        if i1 <= line < i2:
            return j1 + (line - i1) if tag == "equal" else j1
    return len(b) - 1 if line >= len(a) else line


def test_whole_document_changes_move_anchors_as_the_whole_diff_did():
    rnd = random.Random(5)
    pieces = ["a", "b", "", "x y", "c"]
    for _ in range(2000):
        eol = rnd.choice(["\n", "\r\n", "\r"])
        lines = [rnd.choice(pieces) for _ in range(rnd.randint(0, 12))]
        old = eol.join(lines) + rnd.choice(["", eol])
        changed = list(lines)
        for _ in range(rnd.randint(0, 3)):
            at = rnd.randint(0, len(changed))
            roll = rnd.random()
            if roll < 0.4:
                changed.insert(at, rnd.choice(["a", "q", ""]))
            elif changed:
                at = min(at, len(changed) - 1)
                if roll < 0.7:
                    changed.pop(at)
                else:
                    changed[at] += "z"
        new = eol.join(changed) + rnd.choice(["", eol])
        n_new = len(_EOL.split(new))
        ch = anchors.changed(old, new)
        for line in range(len(_EOL.split(old))):
            a = anchors.Anchor("u", "s", (line, 0), (line, 0))
            anchors.remap_changed([a], ch, ch.ops())
            ref = _reference_lines(old, new, line)
            assert 0 <= a.start[0] < n_new or not 0 <= ref < n_new, (old, new, line)
            if line < ch.head:  # above the change: in place
                assert a.start[0] == line
            elif line >= ch.head + len(ch.ops()[0]):  # below it: shifted with the lines
                assert a.start[0] == min(line + len(ch.ops()[1]) - len(ch.ops()[0]), n_new - 1)


def test_a_big_document_with_no_change_near_an_anchor_is_cheap_to_follow():
    text = "".join(f"    value_{i % 97} = {i}\n" for i in range(300_000))  # ~6 MB
    new = text.replace("value_3 = 3\n", "value_3 = 3  # edited\n", 1)
    ch = anchors.changed(text, new)
    assert ch.head == 3 and not ch.big and len(ch.old) == len("    value_3 = 3\n")
    a = anchors.Anchor("u", "s", (250_000, 0), (250_001, 0))
    assert not anchors.remap_all([a], text, new) and a.start == (250_000, 0)
    inserted = "import os\nimport sys\n" + new
    assert anchors.remap_all([a], text, inserted) and a.start == (250_002, 0)


def test_todos_of_a_big_text_are_found_around_their_markers(monkeypatch: pytest.MonkeyPatch):
    rnd = random.Random(5)
    pieces = [
        "x = 1\n",
        "# TODO: fix\n",
        "#   more\n",
        "/* block\n",
        " * FIXME later\n",
        " */\n",
        "s = '# TODO no'\n",
        "// XXX(agent): do\n",
        "\n",
        "<!-- TODO: html -->\n",
        "y--\n",
        "\r\n",
    ]
    texts = ["".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 300))) for _ in range(300)]
    exact = [todos.find_todos(t) for t in texts]
    monkeypatch.setattr(todos, "BIG", 10)  # every text is "big": windows only
    assert [todos.find_todos(t) for t in texts] == exact
    assert todos.find_todos("x = 1\n" * 100_000) == []


BIG_LINES = 60_000  # ~1.5 MB: a whole-document change of it is diffed in a worker thread


async def test_the_origin_follows_a_big_whole_document_change_and_the_edits_after_it(
    editor, agent, repo: Path
):
    """A whole-document change of a big file that inserts three lines on top and changes its
    last line (too much to diff on the loop), then at once two incremental inserts on top:
    the origin ends five lines lower, and a code action is answered meanwhile."""
    text = "".join(f"def f_{i}():\n    return {i % 7}\n" for i in range(BIG_LINES // 2))
    (repo / "big.py").write_text(text)
    agent.configure(runs=[[["replace", "big.py", "return 3\n", "return 3  # agent\n"]]], wait=True)
    uri = editor.open(repo / "big.py")
    origin = BIG_LINES // 2
    sid = (
        await editor.command(
            "handoff.delegate",
            {
                "uri": uri,
                "range": {
                    "start": {"line": origin, "character": 0},
                    "end": {"line": origin + 1, "character": 0},
                },
                "instruction": "x",
            },
        )
    )["sessionId"]
    await editor.wait_diagnostic(uri, lambda d: d.range.start.line == origin, "the origin")
    new = "import a\nimport b\nimport c\n" + text[: -len("7\n")] + "8\n"
    assert anchors.changed(text, new).big
    doc = editor.docs[uri]
    doc.text, doc.version = new, doc.version + 1
    editor.client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=doc.version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=new)],
        )
    )
    editor.type(uri, "# one\n# two\n" + new)  # incremental, right behind it
    other = editor.open(repo / "app.py")
    here = types.Range(
        start=types.Position(line=0, character=0), end=types.Position(line=0, character=3)
    )
    assert await editor.code_actions(other, here)  # answered meanwhile
    await editor.wait_diagnostic(uri, lambda d: d.range.start.line == origin + 5, "it moved")
    await editor.wait_for(
        lambda: editor.session(sid)["range"]["start"]["line"] == origin + 5, "the session range"
    )
    agent.release(sid)
    await editor.wait_state(sid, "ready")


def test_the_line_diff_of_a_big_file_full_of_repeated_lines_is_not_quadratic():
    """~449 KiB of generated Python where four lines in five repeat (difflib took 7.9 s on it, 52 s on
    twice that): the diff reproduces the new text, in well under a second here (5 s allowed,
    for a loaded machine)."""
    import time

    from handoff import linediff

    block = "def handler_{}(request):\n    if request is None:\n        return None\n    pass\n\n"
    old = "".join(block.format(n) for n in range(460_000 // len(block))).splitlines(True)
    new = list(old)
    for at in (len(new) // 100, len(new) // 2, len(new) - 3):
        new[at] = "    return 1  # changed\n"
    new[len(new) * 3 // 4 : len(new) * 3 // 4] = ["def added():\n", "    return None\n"]
    t0 = time.perf_counter()
    ops = linediff.opcodes(old, new)
    took = time.perf_counter() - t0
    rebuilt = []
    for tag, i1, i2, j1, j2 in ops:
        rebuilt += old[i1:i2] if tag == "equal" else new[j1:j2]
    assert rebuilt == new
    assert sum(j2 - j1 for tag, _, _, j1, j2 in ops if tag != "equal") <= 8  # minimal-ish
    assert took < 5, took
