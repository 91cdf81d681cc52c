"""Git for tests: the developer's identity, ``git`` in a folder, what Handoff left in a repository."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.invalid",
    "GIT_COMMITTER_NAME": "Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str, check: bool = True) -> str:
    """Run git in ``cwd`` and return stdout (text, untouched)."""
    env = {**os.environ, **GIT_ENV}
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def git_leftovers(repo: Path) -> tuple[list[str], list[str], list[str]]:
    """(extra worktrees, handoff/* branches, refs under refs/handoff) of ``repo``; the idle
    worktrees of the warm pool (agent/pool.py: detached, no session's) are not leftovers."""
    from handoff.agent.pool import is_pooled

    trees = [
        line
        for line in git(repo, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ") and not is_pooled(line[len("worktree ") :])
    ][1:]
    branches = git(repo, "for-each-ref", "--format=%(refname)", "refs/heads/handoff/").split()
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/handoff/").split()
    return trees, branches, refs
