"""Session worktrees: create, commit, read the result, and clean up without a trace."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from handoff.agent import gitops
from handoff.agent.gitops import FileChange

from tests.support.git import git

LONG = "".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(30))
PNG = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(200))


def worktree_paths(root: Path) -> list[Path]:
    out = git(root, "worktree", "list", "--porcelain")
    return [
        Path(line[len("worktree ") :]) for line in out.splitlines() if line.startswith("worktree ")
    ]


def refs(root: Path, prefix: str = "") -> list[str]:
    return git(root, "for-each-ref", "--format=%(refname)", *([prefix] if prefix else [])).split()


def start_session(root: Path, tmp_path: Path, sid: str) -> tuple[Path, str]:
    """A session as the server makes one: snapshot ref, branch, worktree outside the repo."""
    base = gitops.snapshot(root, ref=f"refs/handoff/{sid}/base")
    wt = tmp_path / "worktrees" / sid
    gitops.add_worktree(root, wt, branch=f"handoff/{sid}", commit=base)
    return wt, base


@pytest.fixture
def richer(repo: Path) -> Path:
    """The sample repo plus a long module (to be renamed) and a binary file."""
    (repo / "long_module.py").write_text(LONG)
    (repo / "logo.png").write_bytes(PNG)
    (repo / "obsolete.txt").write_text("old\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "more files")
    return repo


def test_head_on_a_branch(repo: Path) -> None:
    assert gitops.head(repo) == (git(repo, "rev-parse", "HEAD").strip(), "main")


def test_agent_changes_are_found(richer: Path, tmp_path: Path) -> None:
    root = richer
    (root / "app.py").write_text(
        "# uncommitted work of the developer\n" + (root / "app.py").read_text()
    )
    wt, base = start_session(root, tmp_path, "s1")
    assert (wt / "app.py").read_text().startswith("# uncommitted work")  # the snapshot, checked out
    assert gitops.head(root)[1] == "main"

    (wt / "app.py").write_text(
        (wt / "app.py").read_text() + "\n\ndef mul(a, b):\n    return a * b\n"
    )
    (wt / "README.md").unlink()
    (wt / "pkg").mkdir()
    (wt / "long_module.py").rename(wt / "pkg" / "renamed module.py")
    (wt / "logo.png").write_bytes(PNG + b"\0more")
    (wt / "ünïcødé new.txt").write_text("added by the agent\n", encoding="utf-8")
    result = gitops.commit_worktree(wt, "agent result")

    assert git(wt, "rev-parse", "HEAD").strip() == result
    assert git(wt, "status", "--porcelain") == ""
    found = sorted(gitops.changes(root, base, result), key=lambda c: c.path)
    assert found == sorted(
        [
            FileChange("app.py", "modified"),
            FileChange("README.md", "deleted"),
            FileChange("pkg/renamed module.py", "renamed", old_path="long_module.py"),
            FileChange("logo.png", "modified", binary=True),
            FileChange("ünïcødé new.txt", "added"),
        ],
        key=lambda c: c.path,
    )

    assert gitops.read_blob(root, result, "ünïcødé new.txt") == b"added by the agent\n"
    assert gitops.read_blob(root, base, "logo.png") == PNG
    assert gitops.read_blob(root, result, "README.md") is None
    assert gitops.read_blob(root, base, "README.md") == b"# sample\n"
    with pytest.raises(gitops.GitError, match="no such commit"):
        gitops.read_blob(root, "0" * 40, "app.py")

    diff = gitops.diff_text(root, base, result)
    assert "+def mul(a, b):" in diff
    assert "rename to pkg/renamed module.py" in diff
    assert "ünïcødé new.txt" in diff
    # the developer's own tree never saw any of it
    assert (root / "README.md").exists()
    assert not (root / "ünïcødé new.txt").exists()


def test_binary_added_and_type_change(repo: Path, tmp_path: Path) -> None:
    wt, base = start_session(repo, tmp_path, "s1")
    (wt / "blob.bin").write_bytes(b"\0\1\2")
    (wt / "README.md").unlink()
    (wt / "README.md").symlink_to("app.py")
    result = gitops.commit_worktree(wt, "x")
    found = {c.path: c for c in gitops.changes(repo, base, result)}
    assert found["blob.bin"] == FileChange("blob.bin", "added", binary=True)
    assert found["README.md"].status == "modified"


def test_commits_made_by_the_agent_count(repo: Path, tmp_path: Path) -> None:
    wt, base = start_session(repo, tmp_path, "s1")
    (wt / "a.txt").write_text("committed by the agent\n")
    git(wt, "add", "a.txt")
    git(wt, "commit", "-qm", "agent's own commit")
    (wt / "b.txt").write_text("left uncommitted\n")
    result = gitops.commit_worktree(wt, "handoff result")
    assert {c.path for c in gitops.changes(repo, base, result)} == {"a.txt", "b.txt"}


def test_commit_worktree_without_changes_keeps_head(repo: Path, tmp_path: Path) -> None:
    wt, base = start_session(repo, tmp_path, "s1")
    assert gitops.commit_worktree(wt, "nothing") == base
    assert gitops.changes(repo, base, base) == []


def test_add_worktree_refuses_an_existing_branch(repo: Path, tmp_path: Path) -> None:
    _, base = start_session(repo, tmp_path, "s1")
    with pytest.raises(gitops.GitError, match="handoff/s1 exists already"):
        gitops.add_worktree(repo, tmp_path / "other", branch="handoff/s1", commit=base)
    assert not (tmp_path / "other").exists()


def test_remove_session_leaves_nothing_and_is_idempotent(repo: Path, tmp_path: Path) -> None:
    wt, _ = start_session(repo, tmp_path, "s1")
    other_wt, _ = start_session(repo, tmp_path, "s2")
    git(repo, "update-ref", "refs/handoff/s1/result", "HEAD")
    (wt / "scratch.txt").write_text("uncommitted agent work\n")

    for _ in range(2):
        gitops.remove_session(repo, worktree=wt, branch="handoff/s1", ref_prefix="refs/handoff/s1/")
        assert not wt.exists()
        assert wt.resolve() not in [p.resolve() for p in worktree_paths(repo)]
        assert "refs/heads/handoff/s1" not in refs(repo)
        assert refs(repo, "refs/handoff/s1") == []
    # the other session is untouched
    assert other_wt.resolve() in [p.resolve() for p in worktree_paths(repo)]
    assert refs(repo, "refs/handoff") == ["refs/handoff/s2/base"]
    assert "refs/heads/handoff/s2" in refs(repo)
    assert git(repo, "status", "--porcelain") == ""


def test_remove_session_after_the_folder_was_deleted_by_hand(repo: Path, tmp_path: Path) -> None:
    wt, _ = start_session(repo, tmp_path, "s1")
    shutil.rmtree(wt)
    gitops.remove_session(repo, worktree=wt, branch="handoff/s1", ref_prefix="refs/handoff/s1/")
    assert len(worktree_paths(repo)) == 1
    assert refs(repo, "refs/heads/handoff") == []
    assert refs(repo, "refs/handoff") == []


def test_remove_session_without_knowing_the_worktree(repo: Path, tmp_path: Path) -> None:
    wt, _ = start_session(repo, tmp_path, "s1")
    gitops.remove_session(repo, worktree=None, branch="handoff/s1", ref_prefix="refs/handoff/s1/")
    assert not wt.exists()
    assert len(worktree_paths(repo)) == 1
    assert refs(repo, "refs/heads/handoff") == []


def test_remove_session_refuses_a_broad_prefix(repo: Path) -> None:
    with pytest.raises(gitops.GitError, match="refusing"):
        gitops.remove_session(repo, worktree=None, branch="handoff/x", ref_prefix="refs/")


def test_gc_removes_leftovers_and_keeps_live_sessions(repo: Path, tmp_path: Path) -> None:
    keep_wt, _ = start_session(repo, tmp_path, "live")
    dead_wt, _ = start_session(repo, tmp_path, "dead")
    gone_wt, _ = start_session(repo, tmp_path, "gone")
    shutil.rmtree(gone_wt)  # a worktree deleted by hand
    git(repo, "update-ref", "refs/handoff/orphan/base", "HEAD")  # a ref without branch
    git(repo, "branch", "feature")  # not ours: never touched

    removed = gitops.gc(repo, keep=lambda sid: sid == "live")

    assert removed == ["dead", "gone", "orphan"]
    assert not dead_wt.exists()
    assert [p.resolve() for p in worktree_paths(repo)] == [repo.resolve(), keep_wt.resolve()]
    assert refs(repo, "refs/heads") == [
        "refs/heads/feature",
        "refs/heads/handoff/live",
        "refs/heads/main",
    ]
    assert refs(repo, "refs/handoff") == ["refs/handoff/live/base"]
    assert gitops.gc(repo, keep=lambda sid: sid == "live") == []


def test_no_optional_locks_and_no_prompts() -> None:
    env = gitops._env()
    assert env["GIT_OPTIONAL_LOCKS"] == "0"
    assert env["GIT_TERMINAL_PROMPT"] == "0"


def test_git_errors_are_clear(repo: Path) -> None:
    with pytest.raises(gitops.GitError) as info:
        gitops.changes(repo, "HEAD", "no-such-rev")
    assert "git diff failed" in str(info.value)
    assert "no-such-rev" in str(info.value)


def test_submodule_in_a_session_is_not_a_change(repo: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    git(lib, "init", "-q", "-b", "main")
    (lib / "lib.py").write_text("LIB = 1\n")
    git(lib, "add", "-A")
    git(lib, "commit", "-qm", "lib")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib")
    git(repo, "commit", "-qm", "add submodule")
    wt, base = start_session(repo, tmp_path, "s1")
    (wt / "app.py").write_text("changed\n")
    result = gitops.commit_worktree(wt, "x")
    assert gitops.changes(repo, base, result) == [FileChange("app.py", "modified")]
    assert gitops.read_blob(repo, result, "vendor/lib") is None  # a gitlink has no content


def test_remove_session_never_removes_the_developers_tree(repo: Path) -> None:
    with pytest.raises(gitops.GitError, match="refusing"):
        gitops.remove_session(repo, worktree=repo, branch="handoff/x", ref_prefix="refs/handoff/x/")
    assert (repo / "app.py").exists()


def test_read_blobs_matches_read_blob(repo: Path):
    from handoff.agent import gitops as g

    (repo / "sp ace é.txt").write_text("spaces\n")
    (repo / "bin.dat").write_bytes(b"\x00\x01\x02 missing\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "more")
    head = git(repo, "rev-parse", "HEAD").strip()
    items = [
        (head, "app.py"),
        (head, "sp ace é.txt"),
        (head, "bin.dat"),
        (head, "nope.txt"),
        (head + "~1", "bin.dat"),
    ]
    expected = [g.read_blob(repo, c, p) for c, p in items]
    assert expected[3] is None and expected[4] is None
    assert g.read_blobs(repo, items) == expected
    # with a checkout conversion in force, the blobs come back converted, as read_blob gives them
    (repo / ".gitattributes").write_text("*.py eol=crlf\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "crlf")
    head = git(repo, "rev-parse", "HEAD").strip()
    [py] = g.read_blobs(repo, [(head, "app.py")])
    assert py == g.read_blob(repo, head, "app.py") and b"\r\n" in py


def test_worktrees_made_moved_and_removed_at_once_never_trip_git(
    repo: Path, tmp_path: Path
) -> None:
    """The daemon fills its pool while sessions take, list and remove worktrees: git's own
    worktree administration must not see a half-made worktree (`failed to read .../commondir`)
    nor have `worktree prune` delete one mid-creation."""
    import threading

    errors: list[BaseException] = []
    made: list[Path] = []

    def guarded(job) -> None:
        try:
            job()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    def fill() -> None:
        for i in range(12):
            path = tmp_path / "pool" / f"p{i}"
            gitops.add_detached_worktree(repo, path, "HEAD")
            made.append(path)

    def sessions() -> None:
        for i in range(12):
            wt, _ = start_session(repo, tmp_path, f"race{i}")
            gitops.worktrees(repo)
            gitops.remove_session(
                repo, worktree=wt, branch=f"handoff/race{i}", ref_prefix=f"refs/handoff/race{i}"
            )

    def listing() -> None:
        for _ in range(40):
            gitops.worktrees(repo)

    threads = [threading.Thread(target=guarded, args=(job,)) for job in (fill, sessions, listing)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    listed = {Path(e["worktree"]).resolve() for e in gitops.worktrees(repo)}
    assert {p.resolve() for p in made} <= listed
    assert all((p / "README.md").is_file() for p in made)  # checked out, not just registered


def test_changes_reads_raw_and_numstat_records_of_one_diff(repo: Path):
    base = git(repo, "rev-parse", "HEAD").strip()
    (repo / ":odd name").write_text("a path that starts like a raw record\n")
    (repo / "bin.dat").write_bytes(b"\x00binary\n")
    git(repo, "mv", "README.md", "README.txt")
    (repo / "README.txt").write_text("# sample\nmore\n")
    (repo / "app.py").write_text("changed\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "several kinds")
    found = {c.path: c for c in gitops.changes(repo, base, "HEAD")}
    assert set(found) == {":odd name", "bin.dat", "README.txt", "app.py"}
    assert found["README.txt"].status == "renamed" and found["README.txt"].old_path == "README.md"
    assert [p for p, c in found.items() if c.binary] == ["bin.dat"]
    assert found[":odd name"].status == "added" and found["app.py"].status == "modified"


def test_a_plans_kept_reads_never_hide_a_new_conversion(repo: Path):
    """The merge plan keeps a session's raw blobs, but whether a checkout conversion applies is
    asked again each time: a .gitattributes added between two plans is honoured."""
    from handoff.agent import results

    base = git(repo, "rev-parse", "HEAD").strip()
    (repo / "app.py").write_text("def add(a, b):\n    return b + a\n")
    git(repo, "commit", "-q", "-am", "result")
    result = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "reset", "-q", "--hard", base)
    assert [c.path for c in results.prefetch(repo, base, result)] == ["app.py"]

    def disk(path: str) -> bytes | None:
        return (repo / path).read_bytes()

    [fm] = results.plan(repo, base, result, disk)
    assert fm.action == "write" and fm.content == b"def add(a, b):\n    return b + a\n"
    (repo / ".gitattributes").write_text("*.py eol=crlf\n")  # the developer's, not committed
    (repo / "app.py").write_bytes((repo / "app.py").read_bytes().replace(b"\n", b"\r\n"))
    [fm] = results.plan(repo, base, result, disk)
    assert fm.action == "write" and fm.content == b"def add(a, b):\r\n    return b + a\r\n"
