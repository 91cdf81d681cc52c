"""What Handoff must leave alone in the developer's repository, and checks that it did."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .git import git, git_leftovers

# -- what must not change -------------------------------------------------------------------


def dev_state(repo: Path) -> dict[str, Any]:
    """Everything of the developer's that Handoff must leave alone (works without commits)."""
    dot = repo / ".git"
    head = git(repo, "rev-parse", "-q", "--verify", "HEAD", check=False).strip()
    return {
        "index": (dot / "index").read_bytes() if (dot / "index").exists() else None,
        "status": git(
            repo,
            "--no-optional-locks",
            "-c",
            "core.fsmonitor=false",
            "status",
            "--porcelain=v2",
            "--branch",
            "--untracked-files=all",
        ),
        "stash": git(repo, "stash", "list"),
        "heads": [
            line
            for line in git(repo, "for-each-ref", "refs/heads", "refs/tags").splitlines()
            if "refs/heads/handoff/" not in line
        ],
        "head": (head, (dot / "HEAD").read_bytes()),
        "config": (dot / "config").read_bytes(),
        "hooks": sorted((p.name, p.read_bytes()) for p in (dot / "hooks").iterdir())
        if (dot / "hooks").is_dir()
        else [],
        "files": files_of(repo),
    }


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): (
            os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
        )
        for p in sorted(folder.rglob("*"))
        if (p.is_file() or p.is_symlink()) and ".git" not in p.relative_to(folder).parts
    }


def assert_untouched(
    repo: Path, before: dict[str, Any], applied: dict[str, bytes | None] | None = None
) -> None:
    """The developer's state equals ``before``, except the files of ``applied`` (None: deleted)."""
    after = dev_state(repo)
    files = dict(before["files"])
    for path, data in (applied or {}).items():
        if data is None:
            files.pop(path, None)
        else:
            files[path] = data
    assert after["files"] == files
    for key in ("index", "stash", "heads", "head", "config", "hooks"):
        assert after[key] == before[key], f"the developer's {key} changed"
    if not applied:
        assert after["status"] == before["status"]


def no_session_leftovers(repo: Path) -> None:
    assert git(repo, "branch", "--list", "handoff/*") == ""
    assert git(repo, "for-each-ref", "refs/handoff/") == ""
    assert git_leftovers(repo)[0] == []  # no worktree but main (and the warm pool's idle ones)
