"""A session's result against the files as they are now: plan the merges, write them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from handoff import files

from . import gitops
from .merge import FileMerge, merge_change


def plan(repo_root: Path, base: str, result: str,
         read_current: Callable[[str], bytes | None]) -> list[FileMerge]:
    """Merge each changed file three-way: base = snapshot, ours = now, theirs = agent.

    Every blob is read by one ``git cat-file --batch`` where no checkout conversion applies."""
    changes = gitops.changes(repo_root, base, result)
    items: list[tuple[str, str]] = []
    for change in changes:
        items += [(base, change.old_path or change.path), (result, change.path)]
    blobs = gitops.read_blobs(repo_root, items)
    plans = []
    for i, change in enumerate(changes):
        base_path = change.old_path or change.path
        mode = files.disk_mode(repo_root / base_path)
        # a symbolic link is its target (never what it points to, nor a buffer of that)
        ours = files.read_link(repo_root / base_path) if mode == files.SYMLINK else read_current(base_path)
        fm = merge_change(change, blobs[2 * i], ours, blobs[2 * i + 1], mode)
        if change.status == "renamed" and fm.action != "conflict" and (
                read_current(change.path) is not None or os.path.lexists(repo_root / change.path)):
            fm = FileMerge(path=change.path, action="conflict", content=None, conflicts=fm.conflicts,
                           old_path=change.old_path,
                           reason=f"{change.path} exists already; the agent renamed {base_path} to it")
        plans.append(fm)
    return plans


def write_all(repo_root: Path, plans: list[FileMerge]) -> None:
    """Write every file of ``plans`` or none: all new contents go to temporary files first
    (where a full disk shows), then each replaces its target; deletions come last. Modes and
    symbolic links are applied as the plan says (handoff/files.py)."""
    made_dirs: list[Path] = []
    staged: list[tuple[Path, Path]] = []  # (temporary file, target)
    current = ""
    try:
        for fm in plans:
            if fm.content is None or fm.action == "delete":
                continue
            current = fm.path
            target = repo_root / fm.path
            missing = [d for d in [target.parent, *target.parent.parents]
                       if not d.exists() and repo_root in d.parents]
            for d in reversed(missing):
                d.mkdir()
                made_dirs.append(d)
            staged.append((files.temp_path(target), target))
            files.stage(target, fm.content, fm.mode)
    except OSError as exc:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for d in reversed(made_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise OSError(exc.errno, f"writing {current} failed ({exc.strerror or exc}); "
                                 "nothing was changed") from None
    for tmp, target in staged:
        files.commit(tmp, target)
    for fm in plans:
        if fm.action == "delete":
            (repo_root / fm.path).unlink(missing_ok=True)
        elif fm.action == "rename" and fm.old_path:
            (repo_root / fm.old_path).unlink(missing_ok=True)
