"""A session's result against the files as they are now: plan the merges, write them."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from handoff import files

from . import gitops
from .merge import FileMerge, merge_change

# What a plan reads of git for one (base, result) pair never changes (commits are immutable):
# the changed files and their raw blobs, kept for the next plans of the same session (the conflict
# check when it becomes ready, after each edit of one of its files, the apply), up to a budget.
_READS_BUDGET = 64 << 20  # bytes of blobs kept, over every repository of the process
_reads: collections.OrderedDict[
    tuple[str, str, str], tuple[list[gitops.FileChange], list[bytes | None]]
] = collections.OrderedDict()
_reads_lock = threading.Lock()


def _cached(key: tuple[str, str, str]) -> tuple[list[gitops.FileChange], list[bytes | None]] | None:
    with _reads_lock:
        hit = _reads.get(key)
        if hit is not None:
            _reads.move_to_end(key)
        return hit


def _keep(
    key: tuple[str, str, str], value: tuple[list[gitops.FileChange], list[bytes | None]]
) -> None:
    size = sum(len(b) for b in value[1] if b)
    if size > _READS_BUDGET // 4:
        return
    with _reads_lock:
        _reads[key] = value
        total = sum(sum(len(b) for b in v[1] if b) for v in _reads.values())
        while total > _READS_BUDGET and len(_reads) > 1:
            _, old = _reads.popitem(last=False)
            total -= sum(len(b) for b in old[1] if b)


def prefetch(repo_root: Path, base: str, result: str) -> list[gitops.FileChange]:
    """The files that differ between ``base`` and ``result``; their raw blobs are read too (one
    batch) and kept for the plans to come (a session that just became ready)."""
    key = (str(repo_root), base, result)
    hit = _cached(key)
    if hit is not None:
        return [dataclasses.replace(c) for c in hit[0]]
    changes = gitops.changes(repo_root, base, result)
    items = _items(changes, base, result)
    converts, raw = gitops.read_raw_blobs(repo_root, items) if items else (False, [])
    if not converts:  # (True only for a path the batch cannot take)
        _keep(key, ([dataclasses.replace(c) for c in changes], raw))
    return changes


def _reads_of(
    repo_root: Path, base: str, result: str
) -> tuple[list[gitops.FileChange], list[bytes | None]]:
    """The changed files and, for each, its blob at ``base`` (its old path) and at ``result``,
    in working-tree form. The raw blobs are kept (``prefetch``); whether a checkout conversion
    applies is asked of git each time (two gits run at once; the first time beside the batch),
    and where one does, each blob is read through git's filters."""
    key = (str(repo_root), base, result)
    hit = _cached(key)
    if hit is not None:
        changes, raw = [dataclasses.replace(c) for c in hit[0]], hit[1]
        items = _items(changes, base, result)
        converts = bool(items) and gitops.converts(repo_root, [p for _, p in items])
    else:
        changes = gitops.changes(repo_root, base, result)
        items = _items(changes, base, result)
        if not items:
            return changes, []
        converts, raw = gitops.read_raw_blobs(repo_root, items, check=True)
        if raw:
            _keep(key, ([dataclasses.replace(c) for c in changes], raw))
    if converts:
        return changes, [gitops.read_blob(repo_root, commit, path) for commit, path in items]
    return changes, raw


def _items(changes: list[gitops.FileChange], base: str, result: str) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    for change in changes:
        items += [(base, change.old_path or change.path), (result, change.path)]
    return items


def plan(
    repo_root: Path, base: str, result: str, read_current: Callable[[str], bytes | None]
) -> list[FileMerge]:
    """Merge each changed file three-way: base = snapshot, ours = now, theirs = agent.

    Every blob is read by one ``git cat-file --batch`` where no checkout conversion applies, and
    kept for the next plan of the same commits (``_reads_of``)."""
    changes, blobs = _reads_of(repo_root, base, result)
    plans = []
    for i, change in enumerate(changes):
        base_path = change.old_path or change.path
        mode = files.disk_mode(repo_root / base_path)
        # a symbolic link is its target (never what it points to, nor a buffer of that)
        ours = (
            files.read_link(repo_root / base_path)
            if mode == files.SYMLINK
            else read_current(base_path)
        )
        fm = merge_change(change, blobs[2 * i], ours, blobs[2 * i + 1], mode)
        if (
            change.status == "renamed"
            and fm.action != "conflict"
            and (read_current(change.path) is not None or os.path.lexists(repo_root / change.path))
        ):
            fm = FileMerge(
                path=change.path,
                action="conflict",
                content=None,
                conflicts=fm.conflicts,
                old_path=change.old_path,
                reason=f"{change.path} exists already; the agent renamed {base_path} to it",
            )
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
            missing = [
                d
                for d in [target.parent, *target.parent.parents]
                if not d.exists() and repo_root in d.parents
            ]
            for d in reversed(missing):
                d.mkdir()
                made_dirs.append(d)
            staged.append((files.stage(target, fm.content, fm.mode), target))
    except OSError as exc:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for d in reversed(made_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise OSError(
            exc.errno, f"writing {current} failed ({exc.strerror or exc}); nothing was changed"
        ) from None
    for tmp, target in staged:
        files.commit(tmp, target)
    for fm in plans:
        if fm.action == "delete":
            (repo_root / fm.path).unlink(missing_ok=True)
        elif fm.action == "rename" and fm.old_path:
            (repo_root / fm.old_path).unlink(missing_ok=True)


@dataclasses.dataclass
class Revert:
    """Changes of a session's result the developer rejected, in one file.

    ``merged`` is the file as the merge proposed it to the developer, ``kept`` the same text with
    the rejected changes taken out; both None: the whole change of the file goes (a created file
    is removed, a deleted or renamed one comes back as it was in the snapshot)."""

    path: str
    old_path: str | None = None
    merged: bytes | None = None
    kept: bytes | None = None


class RevertError(Exception):
    """A rejected change could not be taken out of the result cleanly; the message says where."""


def revert(repo_root: Path, worktree: Path, base: str, result: str, reverts: list[Revert]) -> None:
    """Take the rejected changes out of the session's worktree (the caller commits it as the new
    result). The agent's text outside them stays as it is: the step ``merged -> kept`` is merged
    into the agent's file three-way."""
    from .merge import merge3

    items = [(result, r.path) for r in reverts]
    items += [(base, p) for r in reverts for p in (r.path, r.old_path or r.path)]
    blobs = gitops.read_blobs(repo_root, items)
    writes: list[tuple[str, bytes | None]] = []
    for i, r in enumerate(reverts):
        theirs, base_new, base_old = (
            blobs[i],
            blobs[len(reverts) + 2 * i],
            blobs[len(reverts) + 2 * i + 1],
        )
        if r.merged is None or r.kept is None:
            writes.append((r.path, base_new))
            if r.old_path:
                writes.append((r.old_path, base_old))
            continue
        if theirs is None:
            raise RevertError(f"{r.path} is not in the session's result")
        m = merge3(r.merged, theirs, r.kept, labels=("agent", "proposed", "kept"))
        if not m.clean:
            raise RevertError(
                f"the rejected change of {r.path} overlaps other changes of the agent; "
                "follow up with what to change instead"
            )
        writes.append((r.path, m.text))
    for path, data in writes:
        write_in_worktree(worktree, path, data)


def write_in_worktree(worktree: Path, path: str, data: bytes | None) -> None:
    """Write (``data`` None: remove) ``path`` inside ``worktree``, never through a symbolic link
    an agent left on the way (the file itself, if it is one, is replaced, not followed)."""
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute() or ".." in parts or parts[0] == ".git":
        raise RevertError(f"{path!r} is not a path inside the worktree")
    folder = worktree
    for name in parts[:-1]:
        folder = folder / name
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise RevertError(f"{path}: {name} in the worktree is not a folder")
        if data is not None:
            folder.mkdir(exist_ok=True)
    target = folder / parts[-1]
    if data is None:
        if target.is_symlink() or target.is_file():
            target.unlink()
        return
    if target.is_dir() and not target.is_symlink():
        raise RevertError(f"{path} is a folder in the worktree")
    files.write(target, data)  # a link there is replaced, not followed; a file keeps its bits
