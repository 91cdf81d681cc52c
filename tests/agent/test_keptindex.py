"""The kept split index (agent/keptindex.py): a snapshot started from it is the commit a snapshot
of the developer's index makes, nothing of the developer's changes, and every shared index it
writes into the git folder goes away again."""

from __future__ import annotations

from pathlib import Path

import pytest
from handoff.agent import gitops
from handoff.agent.keptindex import KeptIndex

from tests.agent.test_snapshot import blob, developer_state, dirty
from tests.support.git import git

REF = "refs/handoff/s1/base"


@pytest.fixture(autouse=True)
def _no_index_refresh(monkeypatch):
    """Our own `git status` checks must not refresh the index they compare."""
    monkeypatch.setenv("GIT_OPTIONAL_LOCKS", "0")


def ready(root: Path, path: Path) -> KeptIndex:
    """A kept index of ``root`` at ``path``, its split copy made."""
    k = KeptIndex(root, path)
    k.refresh_soon()
    assert k.settle()
    return k


@pytest.fixture
def kept(repo: Path, tmp_path: Path):
    k = ready(repo, tmp_path / "state" / "index")
    yield k
    k.close()


def shared_indexes(repo: Path) -> set[Path]:
    return set((repo / ".git").glob("sharedindex.*"))


def snap(repo: Path, kept: KeptIndex | None, **kw) -> tuple[str, bool]:
    """A snapshot's commit, and whether it started from the kept index."""
    if kept is None:
        return gitops.snapshot(repo, ref=REF, **kw), False
    with kept.use() as start:
        return gitops.take_snapshot(repo, ref=REF, start=start, **kw).commit, start is not None


def tree(repo: Path, commit: str) -> str:
    return git(repo, "rev-parse", f"{commit}^{{tree}}").strip()


def test_a_snapshot_from_the_kept_index_is_the_snapshot_of_the_developers(
    repo: Path, tmp_path: Path
) -> None:
    dirty(repo)
    k = ready(repo, tmp_path / "state" / "index")
    before = developer_state(repo)
    overlays = {"notes.txt": b"unsaved buffer\n", "pkg/new.py": b"print(1)\n"}

    plain, _ = snap(repo, None, overlays=overlays)
    from_kept, used = snap(repo, k, overlays=overlays)
    again, _ = snap(repo, k, overlays=overlays)

    assert used
    assert tree(repo, from_kept) == tree(repo, plain) == tree(repo, again)
    assert blob(repo, from_kept, "app.py") == b"# staged\n# unstaged on top\n"
    assert blob(repo, from_kept, "notes.txt") == b"unsaved buffer\n"
    assert blob(repo, from_kept, "README.md") is None
    assert blob(repo, from_kept, "debug.log") is None
    assert developer_state(repo) == before  # index bytes, files, status, stash, branches
    assert len(shared_indexes(repo)) == 1  # the kept index's, in the git folder
    k.close()
    assert shared_indexes(repo) == set()
    assert not k.path.exists()


def test_when_the_developer_stages_the_next_copy_replaces_the_last(
    repo: Path, kept: KeptIndex
) -> None:
    (repo / "app.py").write_text("staged later\n")
    first = shared_indexes(repo)
    git(repo, "add", "app.py")
    (repo / "app.py").write_text("staged later, then edited\n")
    git(repo, "rm", "-q", "--cached", "README.md")  # untracked now, and still on disk

    commit, used = snap(repo, kept)  # the copy is of the index before: not used
    assert not used
    assert kept.settle()
    commit2, used2 = snap(repo, kept)

    assert used2
    assert tree(repo, commit) == tree(repo, commit2)
    assert blob(repo, commit2, "app.py") == b"staged later, then edited\n"
    assert blob(repo, commit2, "README.md") == (repo / "README.md").read_bytes()
    now = shared_indexes(repo)
    assert len(now) == 1 and not (now & first)  # the last one deleted


def test_a_file_ignored_after_a_snapshot_stays_out_of_the_next(repo: Path, kept: KeptIndex) -> None:
    (repo / "secret.env").write_text("TOKEN=1\n")
    commit, used = snap(repo, kept)
    assert used and blob(repo, commit, "secret.env") == b"TOKEN=1\n"

    (repo / ".gitignore").write_text("*.log\n*.env\n")  # the index does not change
    commit2, used2 = snap(repo, kept)

    assert used2
    assert blob(repo, commit2, "secret.env") is None
    assert blob(repo, commit2, ".gitignore") == b"*.log\n*.env\n"


def test_a_developer_whose_index_is_split_keeps_it_and_snapshots_start_from_it(
    repo: Path, tmp_path: Path
) -> None:
    git(repo, "update-index", "--split-index")
    theirs = shared_indexes(repo)
    assert len(theirs) == 1
    (repo / "app.py").write_text("edited\n")
    k = KeptIndex(repo, tmp_path / "state" / "index")
    k.refresh_soon()

    assert not k.settle()
    commit, used = snap(repo, k)
    k.close()

    assert not used
    assert blob(repo, commit, "app.py") == b"edited\n"
    assert shared_indexes(repo) == theirs
    assert "app.py" in git(repo, "status", "--porcelain")  # their index reads as before


def test_a_shared_index_deleted_under_a_snapshot_costs_the_start_not_the_snapshot(
    repo: Path, kept: KeptIndex
) -> None:
    (repo / "app.py").write_text("edited\n")
    with kept.use() as start:
        assert start is not None
        for shared in shared_indexes(repo):
            shared.unlink()  # by someone else, while the snapshot runs
        commit = gitops.take_snapshot(repo, ref=REF, start=start).commit
    assert blob(repo, commit, "app.py") == b"edited\n"
    assert blob(repo, commit, "README.md") == (repo / "README.md").read_bytes()

    _, used = snap(repo, kept)  # noticed: made again in the background
    assert not used
    assert kept.settle()
    assert len(shared_indexes(repo)) == 1


def test_what_a_daemon_that_did_not_stop_left_the_next_one_deletes(
    repo: Path, tmp_path: Path
) -> None:
    path = tmp_path / "state" / "index"
    ready(repo, path)  # a daemon that did not stop: never closed
    left = shared_indexes(repo)
    assert len(left) == 1
    git(repo, "add", "README.md")  # any index write
    (repo / "new.txt").write_text("new\n")
    git(repo, "add", "new.txt")

    later = ready(repo, path)
    now = shared_indexes(repo)
    assert len(now) == 1 and not (now & left)
    later.close()
    assert shared_indexes(repo) == set()
    assert not path.with_name("index.shared").exists()


def test_a_linked_worktree_has_its_own_kept_index_in_its_own_git_folder(
    repo: Path, tmp_path: Path
) -> None:
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "-b", "side", str(linked))
    (linked / "app.py").write_text("on the side\n")
    admin = Path(git(linked, "rev-parse", "--absolute-git-dir").strip())
    k = ready(linked, tmp_path / "state" / "index-linked")

    commit, used = snap(linked, k)

    assert used
    assert blob(linked, commit, "app.py") == b"on the side\n"
    assert len(list(admin.glob("sharedindex.*"))) == 1 and shared_indexes(repo) == set()
    k.close()
    assert list(admin.glob("sharedindex.*")) == []


def test_a_kept_index_deleted_by_hand_is_made_again(repo: Path, kept: KeptIndex) -> None:
    kept.path.unlink()
    commit, used = snap(repo, kept)
    assert not used and blob(repo, commit, "app.py") == (repo / "app.py").read_bytes()
    assert kept.settle()
    assert snap(repo, kept)[1]
    assert len(shared_indexes(repo)) == 1
