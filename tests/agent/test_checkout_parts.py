"""A worktree checked out in parts (gitops: one ``git checkout-index`` per core, the index
spliced, agent/gitindex.py) is the worktree git's own checkout makes: the same files, modes,
links and index entries, and an index whose stat data is true of every file (nothing is read
again by the next git). What it cannot do in parts it leaves to git. And a pristine worktree moved
to another commit (gitops.branch_pristine_worktree) is the checkout of that commit, its files
that do not differ untouched."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from handoff.agent import gitops

from tests.support.git import git

N_FILES = gitops.PARTS_MIN_ENTRIES + 400


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository of more files than a checkout in parts needs, of every kind git checks out:
    folders of all depths, an executable, symbolic links, a file git converts on the way out
    (``eol=crlf``), a submodule entry, names with spaces and non-ASCII letters."""
    root = tmp_path_factory.mktemp("big") / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for i in range(N_FILES):
        path = root / f"d{i % 7}" / f"s{i % 13}" / f"f{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {i}\n" * (i % 5 + 1))
    (root / "top.txt").write_text("top\n")
    (root / "deep/er/and/deeper").mkdir(parents=True)
    (root / "deep/er/and/deeper/leaf.txt").write_text("leaf\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    os.symlink("top.txt", root / "link-to-top")
    os.symlink("d0", root / "link-to-dir")
    (root / "crlf").mkdir()
    (root / "crlf/text.txt").write_text("one\ntwo\n")
    (root / ".gitattributes").write_text("crlf/* text eol=crlf\n")
    (root / "with space ü").mkdir()
    (root / "with space ü/naïve name.txt").write_text("ü\n")
    git(root, "add", "-A")
    git(root, "update-index", "--add", "--cacheinfo", f"160000,{'1' * 40},vendor/sub")
    git(root, "commit", "-q", "-m", "many files")
    return root


@pytest.fixture
def parts_run(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many parts each checkout in parts ran (the real one runs; this only counts)."""
    runs: list[int] = []
    real = gitops._run_parts

    def counting(path: Path, args, parts, prefix) -> None:  # type: ignore[no-untyped-def]
        runs.append(len(parts))
        real(path, args, parts, prefix)

    monkeypatch.setattr(gitops, "_run_parts", counting)
    yield runs


def _tree(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every file and link under ``root`` but ``.git``: (kind and mode, content or target)."""
    found: dict[str, tuple[str, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        top = dirpath == str(root)
        for name in dirnames + filenames:
            if top and name == ".git":
                continue
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(full).encode())
            elif stat.S_ISREG(st.st_mode):
                found[rel] = (oct(st.st_mode & 0o111), full.read_bytes())
            elif not os.listdir(full):
                found[rel] = ("empty folder", b"")
    return found


_DEBUG = re.compile(
    r"^(?P<path>.+)\n  ctime: (?P<cs>\d+):(?P<cn>\d+)\n  mtime: (?P<ms>\d+):(?P<mn>\d+)\n"
    r"  dev: (?P<dev>\d+)\tino: (?P<ino>\d+)\n  uid: \d+\tgid: \d+\n  size: (?P<size>\d+)",
    re.M,
)


def _stat_data(worktree: Path) -> dict[str, tuple[int, ...]]:
    """The stat data the worktree's index holds for each entry (``git ls-files --debug``)."""
    out = git(worktree, "-c", "core.quotePath=false", "ls-files", "--debug")
    return {
        m["path"]: tuple(int(m[k]) for k in ("ms", "mn", "ino", "size"))
        for m in _DEBUG.finditer(out)
    }


def _git_checkout(repo: Path, path: Path) -> None:
    git(repo, "-c", "checkout.workers=1", "worktree", "add", "-q", "--detach", str(path), "HEAD")


@pytest.mark.parametrize("cores", [2, 3, 8])
def test_in_parts_is_the_worktree_git_makes(
    big: Path, tmp_path: Path, parts_run: list[int], cores: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gitops.os, "cpu_count", lambda: cores)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    gitops.add_detached_worktree(big, ours, "HEAD")
    assert parts_run == [cores]
    _git_checkout(big, theirs)
    assert _tree(ours) == _tree(theirs)
    assert len(_tree(ours)) >= N_FILES
    assert (ours / "crlf/text.txt").read_bytes() == b"one\r\ntwo\r\n"  # converted on the way
    assert git(ours, "ls-files", "-s") == git(theirs, "ls-files", "-s")
    assert git(ours, "status", "--porcelain", "--ignored") == ""
    admin = gitops.worktree_index(ours).parent
    assert sorted(p.name for p in admin.iterdir() if "handoff" in p.name) == []


def test_the_index_holds_true_stat_data_of_every_file(
    big: Path, tmp_path: Path, parts_run: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gitops.os, "cpu_count", lambda: 2)
    wt = tmp_path / "wt"
    gitops.add_detached_worktree(big, wt, "HEAD")
    assert parts_run == [2]
    recorded = _stat_data(wt)
    assert len(recorded) > N_FILES
    for rel, (mtime_s, mtime_ns, ino, size) in recorded.items():
        if rel == "vendor/sub":
            continue  # a submodule's entry holds no stat data of a folder
        st = os.lstat(wt / rel)
        assert (mtime_s, mtime_ns, ino, size) == (
            int(st.st_mtime),
            st.st_mtime_ns % 1_000_000_000,
            st.st_ino,
            st.st_size,
        ), rel
    assert git(wt, "diff-files", "--name-only") == ""


def test_a_small_tree_or_a_single_core_is_left_to_git(
    big: Path, repo: Path, tmp_path: Path, parts_run: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    gitops.add_detached_worktree(repo, tmp_path / "small", "HEAD")
    assert parts_run == []
    assert (tmp_path / "small/app.py").read_text() == (repo / "app.py").read_text()
    assert git(tmp_path / "small", "status", "--porcelain", "--ignored") == ""
    monkeypatch.setattr(gitops.os, "cpu_count", lambda: 1)
    gitops.add_detached_worktree(big, tmp_path / "one", "HEAD")
    assert parts_run == []
    assert git(tmp_path / "one", "status", "--porcelain", "--ignored") == ""


def test_a_sparse_checkout_is_left_to_git(
    big: Path, tmp_path: Path, parts_run: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gitops.os, "cpu_count", lambda: 2)
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "core.sparseCheckout")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "true")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    gitops.add_detached_worktree(big, ours, "HEAD")
    assert parts_run == []
    _git_checkout(big, theirs)
    assert _tree(ours) == _tree(theirs)
    assert git(ours, "ls-files", "-s") == git(theirs, "ls-files", "-s")


def test_a_part_that_fails_fails_the_checkout_clearly(
    big: Path, tmp_path: Path, parts_run: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversion git must run and cannot (a required filter that fails) is an error, as it is
    for git's own checkout: never a worktree with files missing."""
    monkeypatch.setattr(gitops.os, "cpu_count", lambda: 2)
    broken = tmp_path / "broken"
    git(big, "worktree", "add", "-q", "--detach", str(broken), "HEAD")
    (broken / ".gitattributes").write_text("d3/** filter=broken\n")
    git(broken, "commit", "-q", "-am", "a filter")
    commit = git(broken, "rev-parse", "HEAD").strip()
    for key, value in (("filter.broken.smudge", "false"), ("filter.broken.required", "true")):
        n = os.environ.get("GIT_CONFIG_COUNT", "0")
        monkeypatch.setenv(f"GIT_CONFIG_KEY_{n}", key)
        monkeypatch.setenv(f"GIT_CONFIG_VALUE_{n}", value)
        monkeypatch.setenv("GIT_CONFIG_COUNT", str(int(n) + 1))
    with pytest.raises(gitops.GitError, match="checkout-index failed") as failed:
        gitops.add_detached_worktree(big, tmp_path / "wt", commit)
    assert "d3/" in str(failed.value)
    assert parts_run == [2]


@pytest.fixture
def moved(repo: Path, tmp_path: Path) -> tuple[Path, str, str]:
    """(repo, the commit a worktree is at, a commit that differs from it in every way a tree
    can: a file changed, removed, added in a new folder, made executable, a link, a file that
    becomes a folder and a folder that becomes a file, a name with a glob in it)."""
    (repo / "thing").write_text("a file\n")
    (repo / "olddir").mkdir()
    (repo / "olddir/x").write_text("x\n")
    (repo / "star*.txt").write_text("literal\n")
    (repo / "starX.txt").write_text("another\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    base = git(repo, "rev-parse", "HEAD").strip()
    other = tmp_path / "other"
    git(repo, "worktree", "add", "-q", "--detach", str(other), base)
    (other / "app.py").write_text("changed\n")
    (other / "README.md").unlink()
    (other / "new/dir").mkdir(parents=True)
    (other / "new/dir/file.txt").write_text("new\n")
    (other / ".gitignore").chmod(0o755)
    os.symlink("app.py", other / "link")
    (other / "thing").unlink()
    (other / "thing").mkdir()
    (other / "thing/inner").write_text("inner\n")
    (other / "olddir/x").unlink()
    (other / "olddir").rmdir()
    (other / "olddir").write_text("now a file\n")
    (other / "star*.txt").write_text("changed literal\n")
    git(other, "add", "-A")
    git(other, "commit", "-q", "-m", "everything differs")
    target = git(other, "rev-parse", "HEAD").strip()
    git(repo, "worktree", "remove", "--force", str(other))
    return repo, base, target


@pytest.mark.parametrize("paths_max", [gitops.PATHS_MAX, 0], ids=["checkout", "read-tree"])
def test_moving_a_pristine_worktree_writes_what_a_checkout_of_the_target_writes(
    moved: tuple[Path, str, str],
    tmp_path: Path,
    paths_max: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo, base, target = moved
    monkeypatch.setattr(gitops, "PATHS_MAX", paths_max)
    wt, fresh = tmp_path / "wt", tmp_path / "fresh"
    gitops.add_detached_worktree(repo, wt, base)
    gitops.trust_fresh_checkout(wt)
    untouched = os.lstat(wt / "starX.txt").st_ino
    gitops.branch_pristine_worktree(wt, branch="handoff/t", commit=target, head=base)
    git(repo, "worktree", "add", "-q", "--detach", str(fresh), target)
    assert _tree(wt) == _tree(fresh)
    assert git(wt, "ls-files", "-s") == git(fresh, "ls-files", "-s")
    assert git(wt, "status", "--porcelain", "--ignored") == ""
    assert git(wt, "symbolic-ref", "HEAD").strip() == "refs/heads/handoff/t"
    assert git(wt, "rev-parse", "HEAD").strip() == target
    assert os.lstat(wt / "starX.txt").st_ino == untouched  # a file that does not differ: kept


def test_moving_to_the_same_tree_only_makes_the_branch(repo: Path, tmp_path: Path) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    again = git(repo, "commit-tree", "-p", head, "-m", "same tree", f"{head}^{{tree}}").strip()
    wt = tmp_path / "wt"
    gitops.add_detached_worktree(repo, wt, head)
    before = {p: os.lstat(wt / p).st_ino for p in ("app.py", "README.md")}
    gitops.branch_pristine_worktree(wt, branch="handoff/same", commit=again, head=head)
    assert git(wt, "rev-parse", "HEAD").strip() == again
    assert {p: os.lstat(wt / p).st_ino for p in before} == before
    with pytest.raises(gitops.GitError):  # the branch exists now: never made twice
        gitops.branch_pristine_worktree(wt, branch="handoff/same", commit=again, head=again)
