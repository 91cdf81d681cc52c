"""agent/gitindex.py on indexes real git wrote: a plan covers every entry once, in order; the
copies splice back into the index they came from; what it cannot split it refuses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from handoff.agent import gitindex

from tests.support.git import GIT_ENV, git

NAMES = [
    "README.md",
    "a/b/c.txt",
    "a/b/d.txt",
    "a/e.txt",
    "a.txt",
    "dir with space/ü.txt",
    *(f"pkg{i}/mod{j}/file{k}.py" for i in range(3) for j in range(3) for k in range(3)),
    "z",
]


def _repo(root: Path, *init: str) -> Path:
    root.mkdir()
    git(root, "init", "-q", *init)
    for name in NAMES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"{name}\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "files")
    return root


def _index(root: Path, *config: str) -> bytes:
    """What `git read-tree HEAD` writes: every entry, no stat data, a cache tree."""
    index = root / ".git" / "index.test"
    env = {"GIT_INDEX_FILE": str(index), **GIT_ENV}
    subprocess.run(["git", *config, "read-tree", "HEAD"], cwd=root, env=env, check=True)
    return index.read_bytes()


@pytest.fixture(scope="module")
def sha1_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _repo(tmp_path_factory.mktemp("sha1") / "repo")


def _paths(root: Path) -> list[bytes]:
    return [p for p in git(root, "ls-files", "-z").encode().split(b"\0") if p]


@pytest.mark.parametrize("parts", [1, 2, 3, 5, 40])
def test_a_plan_covers_every_entry_once_in_order(sha1_repo: Path, parts: int) -> None:
    data = _index(sha1_repo)
    layout = gitindex.plan(data, parts, 20)
    assert layout is not None
    assert layout.count == len(NAMES)
    assert len(layout.parts) == parts
    joined = b"".join(layout.paths(k) for k in range(parts))
    assert [p for p in joined.split(b"\0") if p] == _paths(sha1_repo)
    assert layout.parts[0].start == 12
    for before, after in zip(layout.parts, layout.parts[1:], strict=False):
        assert before.end == after.start  # contiguous
    assert layout.parts[-1].end == layout.extensions
    assert data[layout.extensions : layout.extensions + 4] == b"TREE"  # the cache tree


@pytest.mark.parametrize("parts", [1, 2, 3, 40])
def test_copies_splice_back_into_the_index_they_came_from(sha1_repo: Path, parts: int) -> None:
    data = _index(sha1_repo)
    layout = gitindex.plan(data, parts, 20)
    assert layout is not None
    assert gitindex.splice(layout, [data] * parts) == data  # the same bytes, the same checksum


def test_each_part_is_taken_from_its_own_copy(sha1_repo: Path) -> None:
    data = _index(sha1_repo)
    layout = gitindex.plan(data, 2, 20)
    assert layout is not None
    # a copy whose stat data (the first 40 bytes of each entry) was filled in by its part
    second = bytearray(data)
    at = layout.parts[1].start
    second[at : at + 40] = b"\x01" * 40
    whole = gitindex.splice(layout, [data, bytes(second)])
    assert whole[at : at + 40] == b"\x01" * 40
    assert whole[:at] == data[:at]
    # git reads it (its checksum is checked) and sees every entry
    (sha1_repo / ".git" / "spliced").write_bytes(whole)
    out = subprocess.run(
        ["git", "ls-files", "-z"],
        cwd=sha1_repo,
        env={"GIT_INDEX_FILE": str(sha1_repo / ".git" / "spliced"), **GIT_ENV},
        capture_output=True,
        check=True,
    )
    assert [p for p in out.stdout.split(b"\0") if p] == _paths(sha1_repo)


def test_a_copy_of_another_layout_is_refused(sha1_repo: Path) -> None:
    data = _index(sha1_repo)
    layout = gitindex.plan(data, 2, 20)
    assert layout is not None
    with pytest.raises(ValueError):
        gitindex.splice(layout, [data, data[:-1]])
    moved = bytearray(data)
    first = layout.parts[1].start + 62
    moved[first] ^= 0xFF  # another path where the second part starts
    with pytest.raises(ValueError):
        gitindex.splice(layout, [data, bytes(moved)])
    with pytest.raises(ValueError):
        gitindex.splice(layout, [data])


def test_every_folder_comes_after_the_folders_above_it(sha1_repo: Path) -> None:
    layout = gitindex.plan(_index(sha1_repo), 2, 20)
    assert layout is not None
    folders = layout.folders()
    expected = {up for name in _paths(sha1_repo) for up in gitindex.parents(name)}
    assert sorted(folders) == sorted(expected)  # each once
    for k, folder in enumerate(folders):
        assert all(up in folders[:k] for up in gitindex.parents(folder)), folder
    assert folders[:3] == [b"a", b"a/b", b"dir with space"]  # in index order


def test_what_it_cannot_split_is_refused(sha1_repo: Path, tmp_path: Path) -> None:
    data = _index(sha1_repo)
    assert gitindex.plan(data, 2, 32) is None  # the wrong object id size
    assert gitindex.plan(data, 2, 7) is None
    assert gitindex.plan(data[: len(data) // 2], 2, 20) is None  # cut short
    assert gitindex.plan(b"", 2, 20) is None
    assert gitindex.plan(_index(sha1_repo, "-c", "index.version=4"), 2, 20) is None
    # version 3: an entry with extended flags (skip-worktree)
    index = sha1_repo / ".git" / "index.v3"
    env = {"GIT_INDEX_FILE": str(index), **GIT_ENV}
    subprocess.run(["git", "read-tree", "HEAD"], cwd=sha1_repo, env=env, check=True)
    subprocess.run(
        ["git", "update-index", "--skip-worktree", "a.txt"], cwd=sha1_repo, env=env, check=True
    )
    assert gitindex.plan(index.read_bytes(), 2, 20) is None


def test_a_sha256_repository(tmp_path: Path) -> None:
    root = _repo(tmp_path / "repo", "--object-format=sha256")
    data = _index(root)
    layout = gitindex.plan(data, 3, 32)
    assert layout is not None and layout.count == len(NAMES)
    assert gitindex.splice(layout, [data] * 3) == data
    assert gitindex.plan(data, 3, 20) is None
