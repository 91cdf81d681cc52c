"""Three-way merge: the developer's edits made meanwhile survive the agent's result."""

from __future__ import annotations

from handoff.agent.gitops import FileChange
from handoff.agent.merge import ConflictRegion, _is_binary, merge3, merge_change
from hypothesis import given, settings
from hypothesis import strategies as st

BASE = b"".join(b"line %d\n" % i for i in range(12))


def edit(text: bytes, old: bytes, new: bytes) -> bytes:
    assert old in text
    return text.replace(old, new, 1)


def lines(text: bytes) -> list[bytes]:
    return text.splitlines()


def test_edits_on_different_lines_merge_clean() -> None:
    ours = edit(BASE, b"line 1\n", b"developer 1\n")
    theirs = edit(BASE, b"line 9\n", b"agent 9\nagent 9b\n")
    result = merge3(BASE, ours, theirs)
    assert result.clean
    assert result.conflicts == []
    assert result.text == edit(ours, b"line 9\n", b"agent 9\nagent 9b\n")
    assert result.with_markers == result.text


def test_overlapping_edits_conflict_at_the_developers_lines() -> None:
    ours = edit(BASE, b"line 0\n", b"inserted 0a\ninserted 0b\nline 0\n")  # shifts ours by 2
    ours = edit(ours, b"line 6\nline 7\n", b"dev 6\ndev 7\n")
    theirs = edit(BASE, b"line 2\n", b"")  # a clean change before, shifting the merge
    theirs = edit(theirs, b"line 6\n", b"agent 6\n")
    result = merge3(BASE, ours, theirs)

    assert not result.clean
    assert result.conflicts == [ConflictRegion(8, 10)]
    region = result.conflicts[0]
    assert lines(ours)[region.start : region.end] == [b"dev 6", b"dev 7"]
    markers = result.with_markers.decode()
    assert (
        "<<<<<<< current\ndev 6\ndev 7\n||||||| base\nline 6\nline 7\n=======\nagent 6\nline 7\n>>>>>>> agent\n"
        in markers
    )
    assert "line 2" not in markers  # the agent's clean deletion is applied
    assert b"line 2" not in result.text and b"dev 6" in result.text  # conflicts resolved to ours


def test_several_conflicts_in_order() -> None:
    ours = edit(edit(BASE, b"line 1\n", b"d1\n"), b"line 8\n", b"d8\n")
    theirs = edit(edit(BASE, b"line 1\n", b"a1\n"), b"line 8\n", b"a8\n")
    theirs = edit(theirs, b"line 4\n", b"a4\na4b\na4c\n")
    result = merge3(BASE, ours, theirs)
    assert result.conflicts == [ConflictRegion(1, 2), ConflictRegion(8, 9)]
    assert result.with_markers.count(b"<<<<<<< current") == 2


def test_conflict_where_the_developer_deleted_lines_is_a_point() -> None:
    ours = edit(BASE, b"line 5\n", b"")
    theirs = edit(BASE, b"line 5\n", b"agent 5\n")
    result = merge3(BASE, ours, theirs)
    assert result.conflicts == [ConflictRegion(5, 5)]


def test_custom_labels_and_content_that_looks_like_markers() -> None:
    base = b"a\n=======\nb\n"
    ours = b"a\n=======\nours\n"
    theirs = b"a\n=======\ntheirs\n"
    result = merge3(base, ours, theirs, labels=("mine", "snapshot", "bot"))
    assert result.conflicts == [ConflictRegion(2, 3)]
    assert b"<<<<<<< mine\n" in result.with_markers
    assert b">>>>>>> bot\n" in result.with_markers


def test_identical_changes_and_one_sided_changes() -> None:
    changed = edit(BASE, b"line 3\n", b"same\n")
    assert merge3(BASE, changed, changed).text == changed
    assert merge3(BASE, BASE, changed).text == changed
    assert merge3(BASE, changed, BASE).text == changed


def test_no_trailing_newline_and_crlf() -> None:
    base = b"one\r\ntwo\r\nthree"
    ours = b"ONE\r\ntwo\r\nthree"
    theirs = b"one\r\ntwo\r\nTHREE"
    result = merge3(base, ours, theirs)
    assert result.clean
    assert result.text == b"ONE\r\ntwo\r\nTHREE"


def test_binary_merges_only_one_sided_changes() -> None:
    base, ours, theirs = b"\0base", b"\0ours", b"\0theirs"
    assert merge3(base, base, theirs).text == theirs
    assert merge3(base, ours, base).text == ours
    result = merge3(base, ours, theirs)
    assert not result.clean
    assert result.conflicts == [ConflictRegion(0, 1)]
    assert result.text == ours


# --- merge_change ------------------------------------------------------------------------


def test_modified_writes_the_merge() -> None:
    ours = edit(BASE, b"line 1\n", b"dev\n")
    theirs = edit(BASE, b"line 9\n", b"agent\n")
    fm = merge_change(FileChange("a.py", "modified"), BASE, ours, theirs)
    assert (fm.action, fm.path, fm.conflicts) == ("write", "a.py", [])
    assert fm.content == edit(ours, b"line 9\n", b"agent\n")


def test_modified_but_already_there_is_unchanged() -> None:
    theirs = edit(BASE, b"line 9\n", b"agent\n")
    fm = merge_change(FileChange("a.py", "modified"), BASE, theirs, theirs)
    assert fm.action == "unchanged"


def test_modified_conflict_explains_itself() -> None:
    ours = edit(BASE, b"line 4\n", b"dev\n")
    theirs = edit(BASE, b"line 4\n", b"agent\n")
    fm = merge_change(FileChange("a.py", "modified"), BASE, ours, theirs)
    assert fm.action == "conflict"
    assert fm.conflicts == [ConflictRegion(4, 5)]
    assert "a.py" in fm.reason and "meanwhile" in fm.reason
    assert fm.content is not None and b"<<<<<<< current" in fm.content


def test_modified_but_deleted_meanwhile() -> None:
    fm = merge_change(FileChange("a.py", "modified"), BASE, None, BASE + b"x\n")
    assert fm.action == "conflict"
    assert "deleted meanwhile" in fm.reason


def test_added_rules() -> None:
    change = FileChange("new.py", "added")
    created = merge_change(change, None, None, b"new\n")
    assert (created.action, created.content) == ("create", b"new\n")
    assert merge_change(change, None, b"new\n", b"new\n").action == "unchanged"
    clash = merge_change(change, None, b"mine\n", b"new\n")
    assert clash.action == "conflict"
    assert "exists already with other content" in clash.reason
    assert clash.conflicts == [ConflictRegion(0, 1)]


def test_deleted_rules() -> None:
    change = FileChange("old.py", "deleted")
    assert merge_change(change, BASE, BASE, None).action == "delete"
    assert merge_change(change, BASE, None, None).action == "unchanged"
    changed = merge_change(change, BASE, BASE + b"dev\n", None)
    assert changed.action == "conflict"
    assert "changed meanwhile" in changed.reason


def test_renamed_rules() -> None:
    change = FileChange("pkg/new.py", "renamed", old_path="old.py")
    theirs = edit(BASE, b"line 9\n", b"agent\n")
    plain = merge_change(change, BASE, BASE, theirs)
    assert (plain.action, plain.path, plain.old_path, plain.content) == (
        "rename",
        "pkg/new.py",
        "old.py",
        theirs,
    )
    ours = edit(BASE, b"line 1\n", b"dev\n")
    merged = merge_change(change, BASE, ours, theirs)
    assert merged.action == "rename"
    assert merged.content == edit(ours, b"line 9\n", b"agent\n")
    clash = merge_change(change, BASE, edit(BASE, b"line 9\n", b"dev\n"), theirs)
    assert clash.action == "conflict" and clash.old_path == "old.py"
    assert merge_change(change, BASE, None, theirs).action == "conflict"


def test_binary_change_rules() -> None:
    change = FileChange("logo.png", "modified", binary=True)
    fm = merge_change(change, b"\0a", b"\0a", b"\0b")
    assert (fm.action, fm.content) == ("write", b"\0b")
    clash = merge_change(change, b"\0a", b"\0c", b"\0b")
    assert clash.action == "conflict"


# --- property: conflict regions point at the developer's side of each conflict ------------

_docs = st.lists(st.sampled_from([b"a\n", b"b\n", b"c\n", b"}\n", b"\n"]), max_size=14)


def _ours_sides(with_markers: bytes) -> list[list[bytes]]:
    sides, current = [], None
    for line in with_markers.splitlines():
        if line.startswith(b"<<<<<<< "):
            current = []
        elif line.startswith(b"||||||| ") and current is not None:
            sides.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return sides


@settings(max_examples=300, deadline=None)
@given(_docs, _docs, _docs)
def test_regions_match_the_marked_ours_side(base, ours, theirs) -> None:
    base_b, ours_b, theirs_b = b"".join(base), b"".join(ours), b"".join(theirs)
    result = merge3(base_b, ours_b, theirs_b)
    ours_lines = ours_b.splitlines()
    sides = _ours_sides(result.with_markers)
    assert len(sides) == len(result.conflicts)
    end = 0
    for region, side in zip(result.conflicts, sides, strict=True):
        assert end <= region.start <= region.end <= len(ours_lines)
        assert ours_lines[region.start : region.end] == side
        end = region.end


_tails = st.sampled_from([b"", b"", b"z", b"}"])  # some last lines without a line end


@settings(max_examples=300, deadline=None)
@given(_docs, _docs, _docs, _tails, _tails, _tails)
def test_the_resolved_text_is_gits_own_ours_resolution(base, ours, theirs, t1, t2, t3) -> None:
    """merge3 reads ours' resolution off the marked merge (one git run less on big files):
    byte for byte what `git merge-file --ours` gives."""
    from handoff.agent import gitops

    base_b, ours_b, theirs_b = b"".join(base) + t1, b"".join(ours) + t2, b"".join(theirs) + t3
    result = merge3(base_b, ours_b, theirs_b)
    if result.conflicts and not _is_binary(base_b, ours_b, theirs_b):
        want, _ = gitops.merge_file(
            ours_b, base_b, theirs_b, ("current", "base", "agent"), "--ours"
        )
        assert result.text == want


def test_a_conflict_keeps_its_resolution_apart_from_its_mode() -> None:
    """The developer's side kept (``resolved``) is bytes of the file; the mode stays a mode."""
    change = FileChange("a.py", "modified", old_mode="100644", new_mode="100644")
    fm = merge_change(change, b"a\nb\n", b"a\nmine\n", b"a\ntheirs\n", "100644")
    assert fm.action == "conflict" and fm.resolved == b"a\nmine\n"
    assert fm.mode is None and fm.current_mode == "100644"
