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
