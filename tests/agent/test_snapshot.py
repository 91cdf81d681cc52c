"""snapshot(): what the developer sees becomes a commit, and nothing of theirs changes."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from handoff.agent import gitops

from tests.support.git import git

REF = "refs/handoff/s1/base"


@pytest.fixture(autouse=True)
def _no_index_refresh(monkeypatch):
    """Our own `git status` checks must not refresh the index they compare."""
    monkeypatch.setenv("GIT_OPTIONAL_LOCKS", "0")


def blob(root: Path, rev: str, path: str) -> bytes | None:
    proc = subprocess.run(
        ["git", "cat-file", "blob", f"{rev}:{path}"], cwd=root, capture_output=True, check=False
    )
    return proc.stdout if proc.returncode == 0 else None


def tree_entry(root: Path, rev: str, path: str) -> tuple[str, str]:
    """(mode, object id) of ``path`` in ``rev``."""
    out = git(root, "ls-tree", "-z", rev, "--", path)
    meta, _, _ = out.rstrip("\0").partition("\t")
    mode, _kind, sha = meta.split(" ")
    return mode, sha


def files(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of the working tree (not .git) with its content hash and mtime."""
    found: dict[str, tuple[bytes, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            data = os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
            found[p.relative_to(root).as_posix()] = (hashlib.sha1(data).digest(), st.st_mtime_ns)
    return found


def developer_state(root: Path) -> dict[str, object]:
    index = root / ".git" / "index"
    return {
        "index": index.read_bytes() if index.exists() else None,
        "files": files(root),
        "status": git(root, "status", "--porcelain=v2", "-z", "--branch", "--untracked-files=all"),
        "stash": git(root, "stash", "list"),
        "branches": git(root, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads"),
        "branch -a": git(root, "branch", "-a"),
        "HEAD": (root / ".git" / "HEAD").read_bytes(),
    }


def dirty(repo: Path) -> None:
    """Work of every kind in the tree: staged, unstaged on top, deleted, untracked, ignored."""
    (repo / "app.py").write_text("# staged\n")
    git(repo, "add", "app.py")
    (repo / "app.py").write_text("# staged\n# unstaged on top\n")
    (repo / "README.md").unlink()
    (repo / "notes.txt").write_text("untracked\n")
    (repo / "debug.log").write_text("ignored\n")


def test_snapshot_has_staged_unstaged_untracked_and_buffers(repo: Path) -> None:
    head_before = git(repo, "rev-parse", "HEAD").strip()
    dirty(repo)
    (repo / "stash-me.txt").write_text("x\n")
    git(repo, "stash", "push", "-u", "-q", "--", "stash-me.txt")
    before = developer_state(repo)

    sha = gitops.snapshot(
        repo,
        ref=REF,
        overlays={"notes.txt": b"unsaved buffer\n", "pkg/new_buffer.py": b"print(1)\n"},
    )

    assert developer_state(repo) == before
    assert git(repo, "rev-parse", REF).strip() == sha
    assert git(repo, "rev-parse", f"{sha}^").strip() == head_before
    assert blob(repo, sha, "app.py") == b"# staged\n# unstaged on top\n"
    assert blob(repo, sha, "README.md") is None  # deleted in the working tree
    assert blob(repo, sha, "notes.txt") == b"unsaved buffer\n"  # the buffer wins over disk
    assert blob(repo, sha, "pkg/new_buffer.py") == b"print(1)\n"
    assert blob(repo, sha, "debug.log") is None  # ignored
    assert blob(repo, sha, "stash-me.txt") is None  # stashed away, not visible
    assert blob(repo, sha, ".gitignore") == b"*.log\n"
    assert git(repo, "log", "-1", "--format=%an <%ae>|%s", sha).strip() == (
        "Handoff <handoff@localhost>|handoff snapshot"
    )


def test_snapshot_from_a_workspace_folder_below_the_root(repo: Path) -> None:
    sub = repo / "pkg" / "sub"
    sub.mkdir(parents=True)
    (sub / "mod.py").write_text("x = 1\n")
    (repo / "top.txt").write_text("outside the workspace folder\n")
    assert gitops.find_repo_root(sub) == repo
    assert gitops.find_repo_root(sub / "mod.py") == repo
    assert gitops.find_repo_root(sub / "not-yet-created.py") == repo
    before = developer_state(repo)

    sha = gitops.snapshot(sub, ref=REF)  # even a subfolder as "root" covers everything

    assert developer_state(repo) == before
    assert blob(repo, sha, "pkg/sub/mod.py") == b"x = 1\n"
    assert blob(repo, sha, "top.txt") == b"outside the workspace folder\n"


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(gitops.NotARepository, match="not a git repository"):
        gitops.find_repo_root(tmp_path / "plain" / "file.py")


def test_detached_head(repo: Path) -> None:
    (repo / "app.py").write_text("second\n")
    git(repo, "commit", "-qam", "second")
    first = git(repo, "rev-parse", "HEAD~1").strip()
    git(repo, "checkout", "-q", "--detach", first)
    (repo / "extra.txt").write_text("new\n")
    assert gitops.head(repo) == (first, None)
    before = developer_state(repo)

    sha = gitops.snapshot(repo, ref=REF)

    assert developer_state(repo) == before
    assert git(repo, "rev-parse", f"{sha}^").strip() == first
    assert blob(repo, sha, "extra.txt") == b"new\n"
    assert blob(repo, sha, "app.py") == (repo / "app.py").read_bytes()


def test_repository_without_commits(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    assert gitops.head(root) == (None, "main")
    (root / "a.txt").write_text("first file\n")
    (root / "staged.txt").write_text("staged\n")
    git(root, "add", "staged.txt")
    before = developer_state(root)

    sha = gitops.snapshot(root, ref=REF, overlays={"buf.txt": b"buffer\n"})

    assert developer_state(root) == before
    assert git(root, "rev-list", "--parents", "-n1", sha).split() == [sha]  # no parent
    assert blob(root, sha, "a.txt") == b"first file\n"
    assert blob(root, sha, "staged.txt") == b"staged\n"
    assert blob(root, sha, "buf.txt") == b"buffer\n"
    assert gitops.head(root) == (None, "main")


def test_repository_without_commits_or_files(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    sha = gitops.snapshot(root, ref=REF)
    assert git(root, "ls-tree", "-r", sha) == ""
    assert not (root / ".git" / "index").exists()


def test_spaces_non_ascii_and_binary(repo: Path) -> None:
    odd = "dir with space/ünïcødé naïve file.txt"
    (repo / "dir with space").mkdir()
    (repo / odd).write_text("héllo\n", encoding="utf-8")
    binary = bytes(range(256)) * 4
    (repo / "image.bin").write_bytes(binary)
    (repo / "tab\there.txt").write_text("tab\n")
    before = developer_state(repo)

    sha = gitops.snapshot(repo, ref=REF, overlays={"новый файл.txt": "буфер\n".encode()})

    assert developer_state(repo) == before
    assert blob(repo, sha, odd) == "héllo\n".encode()
    assert blob(repo, sha, "image.bin") == binary
    assert blob(repo, sha, "tab\there.txt") == b"tab\n"
    assert blob(repo, sha, "новый файл.txt") == "буфер\n".encode()


def test_symlink_stays_a_symlink(repo: Path) -> None:
    os.symlink("app.py", repo / "link.py")
    before = developer_state(repo)

    sha = gitops.snapshot(repo, ref=REF, overlays={"link.py": b"# buffer of the target\n"})

    assert developer_state(repo) == before
    mode, _ = tree_entry(repo, sha, "link.py")
    assert mode == "120000"
    assert blob(repo, sha, "link.py") == b"app.py"
    # a buffer opened through the link is the target's content
    assert blob(repo, sha, "app.py") == b"# buffer of the target\n"


def test_executable_mode_kept_for_overlays(repo: Path) -> None:
    (repo / "run.sh").write_text("#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    git(repo, "add", "run.sh")
    git(repo, "commit", "-qm", "script")
    sha = gitops.snapshot(repo, ref=REF, overlays={"run.sh": b"#!/bin/sh\necho hi\n"})
    assert tree_entry(repo, sha, "run.sh")[0] == "100755"
    assert blob(repo, sha, "run.sh") == b"#!/bin/sh\necho hi\n"


def test_overlay_modes_follow_the_working_tree(repo: Path) -> None:
    """An unsaved buffer gets the mode `git add -A` gives its file: an unstaged chmod counts, a
    new executable file is executable, and with core.fileMode=false the recorded mode stays."""
    (repo / "tool.sh").write_text("#!/bin/sh\n")
    git(repo, "add", "tool.sh")
    git(repo, "commit", "-qm", "tool")
    (repo / "tool.sh").chmod(0o755)  # not staged
    (repo / "new.sh").write_text("#!/bin/sh\n")
    (repo / "new.sh").chmod(0o755)  # untracked
    buffers = {"tool.sh": b"#!/bin/sh\necho tool\n", "new.sh": b"#!/bin/sh\necho new\n"}
    sha = gitops.snapshot(repo, ref=REF, overlays=buffers)
    assert tree_entry(repo, sha, "tool.sh")[0] == "100755"
    assert tree_entry(repo, sha, "new.sh")[0] == "100755"
    assert blob(repo, sha, "tool.sh") == b"#!/bin/sh\necho tool\n"
    assert blob(repo, sha, "new.sh") == b"#!/bin/sh\necho new\n"

    git(repo, "config", "core.fileMode", "false")
    sha = gitops.snapshot(repo, ref=REF, overlays=buffers)
    assert tree_entry(repo, sha, "tool.sh")[0] == "100644"  # as recorded: the bit is not trusted
    assert tree_entry(repo, sha, "new.sh")[0] == "100644"
    assert blob(repo, sha, "tool.sh") == b"#!/bin/sh\necho tool\n"


def test_an_overlay_on_a_folder_is_left_out(repo: Path) -> None:
    (repo / "pkg").mkdir(exist_ok=True)
    (repo / "pkg" / "mod.py").write_text("X = 1\n")
    snap = gitops.take_snapshot(
        repo, ref=REF, overlays={"pkg": b"not a file\n"}, read=["pkg/mod.py", "absent.txt"]
    )
    assert tree_entry(repo, snap.commit, "pkg/mod.py")[0] == "100644"
    assert snap.blobs == {"pkg/mod.py": b"X = 1\n", "absent.txt": None}
    assert snap.submodules == []


def test_submodule_stays_a_gitlink(repo: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    git(lib, "init", "-q", "-b", "main")
    (lib / "lib.py").write_text("LIB = 1\n")
    git(lib, "add", "-A")
    git(lib, "commit", "-qm", "lib")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib")
    git(repo, "commit", "-qm", "add submodule")
    sub_head = git(repo / "vendor" / "lib", "rev-parse", "HEAD").strip()
    (repo / "vendor" / "lib" / "lib.py").write_text("LIB = 2  # dirty inside the submodule\n")
    before = developer_state(repo)

    sha = gitops.snapshot(repo, ref=REF)

    assert developer_state(repo) == before
    assert tree_entry(repo, sha, "vendor/lib") == ("160000", sub_head)
    assert blob(repo, sha, ".gitmodules") == (repo / ".gitmodules").read_bytes()
    assert gitops.take_snapshot(repo, ref=REF).submodules == ["vendor/lib"]


def test_overlay_outside_the_repository_is_refused(repo: Path) -> None:
    for bad in ("../escape.txt", "/etc/passwd", ".git/config"):
        with pytest.raises(gitops.GitError, match="not a path inside the repository"):
            gitops.snapshot(repo, ref=REF, overlays={bad: b"x"})
    assert git(repo, "for-each-ref", "refs/handoff") == ""


def test_snapshot_twice_moves_the_ref_and_keeps_both_commits(repo: Path) -> None:
    first = gitops.snapshot(repo, ref=REF)
    (repo / "app.py").write_text("changed\n")
    second = gitops.snapshot(repo, ref=REF)
    assert first != second
    assert git(repo, "rev-parse", REF).strip() == second
    assert blob(repo, first, "app.py") != blob(repo, second, "app.py")


def test_snapshot_is_fast_on_many_files(repo: Path) -> None:
    import time

    for d in range(50):
        folder = repo / f"d{d}"
        folder.mkdir()
        for f in range(100):
            (folder / f"f{f}.txt").write_text(f"{d}/{f}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "many")
    (repo / "d3" / "f7.txt").write_text("edited\n")
    start = time.perf_counter()
    sha = gitops.snapshot(repo, ref=REF)
    elapsed = time.perf_counter() - start
    assert blob(repo, sha, "d3/f7.txt") == b"edited\n"
    assert elapsed < 2.0, f"snapshot of 5,000 files took {elapsed:.2f}s"


def test_snapshot_outside_a_repository(tmp_path: Path) -> None:
    with pytest.raises(gitops.NotARepository, match=f"not a git repository: {tmp_path}"):
        gitops.snapshot(tmp_path, ref=REF)
