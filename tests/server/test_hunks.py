"""Hunks of a merge plan (pure), and taking rejected changes out of a worktree safely."""

from __future__ import annotations

from pathlib import Path

import pytest
from handoff.agent.merge import FileMerge
from handoff.agent.results import RevertError, write_in_worktree
from handoff.server.hunks import file_hunks

NOW = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
MERGED = NOW.replace("a + b\n", "a + b  # sum\n").replace("a - b\n", "a - b  # difference\n")


def wire(hunks):
    return [h.wire() for h in hunks]


def test_hunks_are_the_changes_against_the_text_as_it_is():
    first, second = file_hunks(
        FileMerge("app.py", "write", MERGED.encode(), []), "file:///r/app.py", NOW, "utf-16"
    )
    assert first.wire() == {
        "id": first.id,
        "newText": "    return a + b  # sum\n",
        "oldText": "    return a + b\n",
        "range": {"start": {"line": 1, "character": 0}, "end": {"line": 2, "character": 0}},
    }
    assert (second.range.start.line, second.old_text) == (5, "    return a - b\n")
    assert first.id != second.id and len(first.id) == 16


def test_ids_stay_while_lines_above_move_the_ranges():
    fm = FileMerge("app.py", "write", MERGED.encode(), [])
    before = file_hunks(fm, "u", NOW, "utf-16")
    assert wire(file_hunks(fm, "u", NOW, "utf-16")) == wire(before)
    moved = file_hunks(
        FileMerge("app.py", "write", ("import os\n" + MERGED).encode(), []),
        "u",
        "import os\n" + NOW,
        "utf-16",
    )
    assert [h.id for h in moved] == [h.id for h in before]
    assert [h.range.start.line for h in moved] == [2, 6]


def test_equal_changes_in_one_file_have_their_own_ids():
    now = "x = 1\ny = 2\nx = 1\n"
    hunks = file_hunks(
        FileMerge("f.py", "write", b"x = 10\ny = 2\nx = 10\n", []), "u", now, "utf-16"
    )
    assert [h.old_text for h in hunks] == ["x = 1\n", "x = 1\n"]
    assert hunks[0].id != hunks[1].id


def test_an_unterminated_last_line():
    [h] = file_hunks(FileMerge("f.py", "write", b"a\nc", []), "u", "a\nb", "utf-16")
    assert (h.old_text, h.new_text) == ("b", "c")
    assert h.wire()["range"] == {
        "start": {"line": 1, "character": 0},
        "end": {"line": 1, "character": 1},
    }


def test_whole_files_are_one_hunk_and_conflicts_keep_their_clean_parts():
    [created] = file_hunks(FileMerge("new.py", "create", b"x = 1\n", []), "u", None, "utf-16")
    assert created.whole and created.wire()["file"] is True and created.new_text == "x = 1\n"
    [deleted] = file_hunks(FileMerge("old.py", "delete", None, []), "u", "y\n", "utf-16")
    assert deleted.whole and (deleted.old_text, deleted.new_text) == ("y\n", "")
    assert file_hunks(FileMerge("a.py", "conflict", b"<<<", []), "u", NOW, "utf-16") == []
    resolved = NOW.replace("a + b\n", "a + b  # sum\n")  # the clean part; the conflict keeps ours
    [clean] = file_hunks(
        FileMerge("a.py", "conflict", b"<<<", [], resolved=resolved.encode()), "u", NOW, "utf-16"
    )
    assert clean.new_text == "    return a + b  # sum\n" and not clean.whole


def test_write_in_worktree_never_follows_a_link(tmp_path: Path):
    worktree, outside = tmp_path / "wt", tmp_path / "outside"
    worktree.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("keep")
    (worktree / "sub").symlink_to(outside)
    with pytest.raises(RevertError):
        write_in_worktree(worktree, "sub/secret", b"changed")
    (worktree / "link").symlink_to(outside / "secret")
    write_in_worktree(worktree, "link", b"replaced")  # the link itself is replaced
    assert (outside / "secret").read_text() == "keep"
    assert (worktree / "link").read_text() == "replaced" and not (worktree / "link").is_symlink()
    for bad in ("../x", "/etc/passwd", ".git/config"):
        with pytest.raises(RevertError):
            write_in_worktree(worktree, bad, b"x")
    write_in_worktree(worktree, "deep/new.py", b"y = 1\n")
    assert (worktree / "deep" / "new.py").read_bytes() == b"y = 1\n"
    write_in_worktree(worktree, "deep/new.py", None)
    assert not (worktree / "deep" / "new.py").exists()


def test_bare_selection_agrees_with_the_task_rules():
    """The code action's quick check (per-text caches) says "no task here" exactly when
    ``delegation.task_of`` would refuse, for every selection of a few documents."""
    from handoff.server import delegation
    from handoff.server.code_actions import _bare
    from lsprotocol import types

    texts = [
        NOW,
        "# Document sub.\n" + NOW,
        NOW.replace("def sub", "# TODO: abs\n\n\ndef sub"),
        "x = 1  # note\n\n/* block\n   text */\ny = 2\n# \nz = 3\n",
        "a = '# not a comment'\nb = 1\n",
    ]
    for text in texts:
        n = len(text.splitlines())
        for a in range(n + 1):
            for b in range(a, n + 2):
                rng = types.Range(
                    start=types.Position(line=a, character=0),
                    end=types.Position(line=b, character=0),
                )
                try:
                    delegation.task_of(
                        text,
                        {"start": {"line": a, "character": 0}, "end": {"line": b, "character": 0}},
                        "f.py",
                    )
                    refused = False
                except delegation.NoTask:
                    refused = True
                assert _bare(text, rng) is refused, (text, a, b)
