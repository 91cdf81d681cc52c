"""agent/watch.py: a watched tree is quiet until something is written anywhere in it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from handoff.agent.watch import Watch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


def folders(root: Path) -> list[str]:
    return [str(root)] + [str(p) for p in root.rglob("*") if p.is_dir()]


@pytest.mark.parametrize(
    "write",
    [
        lambda t: (t / "a" / "b" / "new.txt").write_text("made"),
        lambda t: (t / "a" / "b" / "c.txt").open("r+").write("X"),  # in place
        lambda t: os.chmod(t / "a" / "b" / "c.txt", 0o755),
        lambda t: (t / "a" / "b" / "c.txt").unlink(),
        lambda t: (t / "a" / "b" / "c.txt").rename(t / "a" / "moved.txt"),
        lambda t: (t / "a" / "b" / "new").mkdir(),
        lambda t: (t / "top.txt").write_text("changed"),
    ],
)
def test_a_tree_is_quiet_until_anything_is_written_in_it(tmp_path: Path, write):
    for name in ("one", "two"):
        (tmp_path / name / "a" / "b").mkdir(parents=True)
        (tmp_path / name / "a" / "b" / "c.txt").write_text("c")
        (tmp_path / name / "top.txt").write_text("top")
    watch = Watch()
    assert watch.add("one", folders(tmp_path / "one"))
    assert watch.add("two", folders(tmp_path / "two"))
    assert (tmp_path / "one" / "a" / "b" / "c.txt").read_text() == "c"  # reading writes nothing
    assert watch.quiet("one") and watch.quiet("two")
    write(tmp_path / "one")
    assert not watch.quiet("one")
    assert watch.quiet("two")  # the other tree's watch is its own


def test_what_the_watch_cannot_vouch_for_is_never_quiet(tmp_path: Path):
    watch = Watch()
    assert not watch.quiet("never added")
    (tmp_path / "t").mkdir()
    assert watch.add("t", folders(tmp_path / "t"))
    watch.forget("t")
    assert not watch.quiet("t")
    assert not watch.add("gone", [str(tmp_path / "t"), str(tmp_path / "missing")])
    assert not watch.quiet("gone")


def test_the_watches_stay_within_a_share_of_the_users_limit(tmp_path: Path, monkeypatch):
    """A machine whose fs.inotify.max_user_watches is 64: Handoff takes at most 4 of them (the
    editor needs the rest); a tree that would pass that is checked file by file instead, and a
    forgotten tree gives its watches back."""
    from handoff.agent import watch as module

    limit = tmp_path / "max_user_watches"
    limit.write_text("64\n")
    monkeypatch.setattr(module, "_MAX_WATCHES", str(limit))
    monkeypatch.setattr(module, "_taken", 0)
    trees = []
    for name in ("one", "two"):
        (tmp_path / name / "a" / "b").mkdir(parents=True)
        trees.append(folders(tmp_path / name))
    assert len(trees[0]) == 3
    watch = Watch()
    assert watch.add("one", trees[0])
    assert not watch.add("two", trees[1]) and not watch.quiet("two")
    watch.forget("one")
    assert watch.add("two", trees[1]) and watch.quiet("two")
    watch.close()  # the daemon stops: every watch goes back
    assert not watch.quiet("two")
    assert Watch().add("one", trees[0])
