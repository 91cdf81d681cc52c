"""Every git call of Handoff: snapshots, session worktrees, diffs, cleanup.

Git output is parsed here and only here, from ``-z``/porcelain formats. Every call runs with
``GIT_OPTIONAL_LOCKS=0`` and never prompts, so nothing touches the developer's index, stash,
branches or files unless a function says so.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal, NoReturn

from handoff.files import write as write_file

from . import gitindex
from .gitenv import REPOSITORY_VARS

log = logging.getLogger(__name__)

IDENTITY = {
    "GIT_AUTHOR_NAME": "Handoff",
    "GIT_AUTHOR_EMAIL": "handoff@localhost",
    "GIT_COMMITTER_NAME": "Handoff",
    "GIT_COMMITTER_EMAIL": "handoff@localhost",
}
BRANCH_PREFIX = "handoff/"
REF_ROOT = "refs/handoff/"
_DIFF_OPTS = ("--no-ext-diff", "--no-textconv", "--no-color", "--find-renames", "--no-relative")


class GitError(Exception):
    """A git operation failed; the message is meant for the developer."""


class NotARepository(GitError):
    """The path is not inside a git working tree."""


@dataclasses.dataclass
class FileChange:
    path: str  # repository-relative posix path (the new path for a rename)
    status: Literal["added", "modified", "deleted", "renamed"]
    old_path: str | None = None
    binary: bool = False
    # git modes at base and in the result ("100644", "100755", "120000"); "" where absent
    old_mode: str = dataclasses.field(default="", compare=False)
    new_mode: str = dataclasses.field(default="", compare=False)


_hooks_dir: str | None = None


def _no_hooks() -> str:
    """An empty folder Handoff owns (read-only, created once a process), for ``core.hooksPath``:
    no hook of the developer's, nor one an agent wrote in its worktree (a relative hooksPath
    resolves inside the worktree), runs for any git call of Handoff."""
    global _hooks_dir
    if _hooks_dir is None or not os.path.isdir(_hooks_dir):
        folder = tempfile.mkdtemp(prefix="handoff-nohooks-")
        os.chmod(folder, 0o500)
        atexit.register(_remove_hooks_dir, folder)
        _hooks_dir = folder
    return _hooks_dir


def _remove_hooks_dir(folder: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(folder)


def git_argv(*args: str) -> list[str]:
    """The argv of ``git *args`` as Handoff runs it: with no hooks at all."""
    return ["git", "-c", f"core.hooksPath={_no_hooks()}", *args]


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in REPOSITORY_VARS}  # .gitenv
    env.update(GIT_OPTIONAL_LOCKS="0", GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANGUAGE="C")
    env.setdefault("GIT_ASKPASS", "true")
    if extra:
        env.update(extra)
    return env


def _run(
    cwd: Path,
    *args: str,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run ``git *args`` in ``cwd``; bytes in, bytes out; GitError on failure when ``check``.
    ``prefix``: argv put before git's (e.g. ``nice``)."""
    with _admin_lock(cwd, args):
        return _run_unlocked(cwd, args, stdin=stdin, env=env, check=check, prefix=prefix)


# Git's worktree administration is not safe against itself: a `git worktree list` (or a branch
# check, which reads every worktree) run while `git worktree add` is half-way through making
# `.git/worktrees/<name>/` fails with "failed to read .../commondir", and a `git worktree prune`
# at that moment deletes the half-made folder. The daemon makes pooled and session worktrees
# while it moves and removes others, so every command that makes, moves, removes or reads the
# worktrees of a repository runs one at a time per repository (the slow part of making one, the
# checkout, runs outside: `worktree add --no-checkout`, then `reset --hard` in the worktree).
_ADMIN_COMMANDS = {"worktree", "branch"}
_admin_locks: dict[str, threading.Lock] = {}
_common_dirs: dict[str, str] = {}
_admin_guard = threading.Lock()


def _is_admin(args: Sequence[str]) -> bool:
    sub = next((a for a in args if not a.startswith("-") and "=" not in a), "")
    return sub in _ADMIN_COMMANDS or (sub == "checkout" and "-b" in args)


def _admin_lock(cwd: Path, args: Sequence[str]) -> contextlib.AbstractContextManager[object]:
    if not _is_admin(args):
        return contextlib.nullcontext()
    key = os.path.realpath(cwd)
    common = _common_dirs.get(key)
    if common is None:
        proc = _run_unlocked(
            Path(cwd), ("rev-parse", "--path-format=absolute", "--git-common-dir"), check=False
        )
        found = os.fsdecode(proc.stdout).strip() if proc.returncode == 0 else ""
        common = os.path.realpath(found or key)
        if found:  # not a repository (yet): asked again next time
            _common_dirs[key] = common
    with _admin_guard:
        return _admin_locks.setdefault(common, threading.Lock())


def _run_unlocked(
    cwd: Path,
    args: Sequence[str],
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(
            [*prefix, *git_argv(*args)],
            cwd=cwd,
            env=_env(env),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError as exc:
        _not_found(cwd, exc)
    if check:
        _check(cwd, args, proc)
    return proc


def _not_found(cwd: Path, exc: FileNotFoundError) -> NoReturn:
    if not Path(cwd).is_dir():
        raise GitError(f"folder does not exist: {cwd}") from exc
    raise GitError("git was not found on PATH; install git to use Handoff") from exc


def _check(cwd: Path, args: Sequence[str], proc: subprocess.CompletedProcess[bytes]) -> None:
    if proc.returncode != 0:
        sub = next((a for a in args if not a.startswith("-") and "=" not in a), "")
        msg = os.fsdecode(proc.stderr).strip() or f"exit code {proc.returncode}"
        if "not a git repository" in msg:
            raise NotARepository(f"not a git repository: {cwd}")
        raise GitError(f"git {sub} failed in {cwd}: {msg}")


def _run_many(
    cwd: Path,
    calls: Sequence[tuple[Sequence[str], bytes | None, bool]],
    *,
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> list[subprocess.CompletedProcess[bytes]]:
    """``_run`` of several ``(args, stdin, check)`` at once (``env`` for each): every git
    started first, then each one's output read in turn (a process whose pipe is full waits for
    its turn), so their start-up costs overlap. Raises the first failure, after every one has
    ended. (Worktree administration, one command at a time per repository, runs in turn.)"""
    done: list[subprocess.CompletedProcess[bytes]] = []
    if any(_is_admin(args) for args, _, _ in calls):
        done = [
            _run(cwd, *args, stdin=stdin, env=env, check=False, prefix=prefix)
            for args, stdin, _ in calls
        ]
        for (args, _, check), result in zip(calls, done, strict=True):
            if check:
                _check(cwd, args, result)
        return done
    procs: list[tuple[subprocess.Popen[bytes], bytes | None]] = []
    try:
        for args, stdin, _ in calls:
            try:
                procs.append(
                    (
                        subprocess.Popen(
                            [*prefix, *git_argv(*args)],
                            cwd=cwd,
                            env=_env(env),
                            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                        ),
                        stdin,
                    )
                )
            except FileNotFoundError as exc:
                _not_found(cwd, exc)
    finally:
        for child, data in procs:
            out, err = child.communicate(data)
            done.append(subprocess.CompletedProcess(child.args, child.returncode, out, err))
    for (args, _, check), result in zip(calls, done, strict=True):
        if check:
            _check(cwd, args, result)
    return done


def _out(cwd: Path, *args: str, **kw: Any) -> str:
    return os.fsdecode(_run(cwd, *args, **kw).stdout).strip()


def _z(data: bytes) -> list[str]:
    """Split NUL-terminated git output into paths/fields."""
    return [os.fsdecode(p) for p in data.split(b"\0") if p]


# --- repository ------------------------------------------------------------------------


def find_repo_root(path: Path) -> Path:
    """The top folder of the working tree that contains ``path`` (a file or a folder)."""
    path = Path(path).absolute()
    start = path
    while not start.is_dir():
        if start.parent == start:
            raise NotARepository(f"not a git repository: {path}")
        start = start.parent
    proc = _run(start, "rev-parse", "--show-toplevel", check=False)
    top = os.fsdecode(proc.stdout).strip()
    if proc.returncode != 0 or not top:
        raise NotARepository(f"not a git repository: {path}")
    return Path(top)


def head(repo_root: Path) -> tuple[str | None, str | None]:
    """(HEAD commit or None when there is no commit yet, branch name or None when detached)."""
    proc = _run(repo_root, "rev-parse", "-q", "--verify", "HEAD^{commit}", check=False)
    sha = os.fsdecode(proc.stdout).strip() if proc.returncode == 0 else None
    proc = _run(repo_root, "symbolic-ref", "-q", "--short", "HEAD", check=False)
    branch = os.fsdecode(proc.stdout).strip() if proc.returncode == 0 else None
    return sha or None, branch or None


def resolve(cwd: Path, rev: str) -> str:
    """The commit ``rev`` names in the repository (or worktree) at ``cwd``."""
    return _out(cwd, "rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}")


def _check_rel(path: str) -> str:
    """Validate a repository-relative posix path (no absolute, '..' or '.git' parts)."""
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or any(p in ("..", ".", ".git") for p in parts):
        raise GitError(f"not a path inside the repository: {path!r}")
    return "/".join(parts)


# --- snapshot --------------------------------------------------------------------------


@dataclasses.dataclass
class Snapshot:
    """A snapshot's commit, and what was read of it beside the ref's update."""

    commit: str
    blobs: dict[str, bytes | None]  # each path of ``read`` at the commit (``read_blob``'s form)
    submodules: list[str]  # ``submodule_paths`` of the commit


_index_paths: dict[tuple[str, int, int], Path] = {}


def _index_path(repo_root: Path) -> Path:
    """The developer's index file (``rev-parse --git-path index``), asked of git once per
    repository while its ``.git`` stays the same file or folder."""
    try:
        st = os.lstat(repo_root / ".git")
        key: tuple[str, int, int] | None = (str(repo_root), st.st_dev, st.st_ino)
    except OSError:
        key = None
    found = _index_paths.get(key) if key else None
    if found is None:
        found = Path(_out(repo_root, "rev-parse", "--git-path", "index"))
        if not found.is_absolute():
            found = repo_root / found
        if key:
            _index_paths[key] = found
    return found


def index_path(repo_root: Path) -> Path:
    """The developer's index file of the worktree ``repo_root``."""
    return _index_path(Path(repo_root))


def shared_index_path(repo_root: Path, index: Path | None = None) -> Path | None:
    """The shared index ``index`` (the developer's, by default) is split from, or None when it
    is not split (``rev-parse --shared-index-path``)."""
    env = {"GIT_INDEX_FILE": str(index)} if index is not None else None
    found = _out(repo_root, "rev-parse", "--shared-index-path", env=env)
    return (Path(repo_root) / found) if found else None


def split_index(repo_root: Path, index: Path, *, prefix: Sequence[str] = ()) -> None:
    """Split the index file ``index`` of ``repo_root``: its entries move to a new shared index
    in the git folder (where git keeps them: ``sharedindex.<hash>``), which no git is let
    expire (agent/keptindex.py owns it)."""
    _run(
        repo_root,
        "-c",
        "splitIndex.sharedIndexExpire=never",
        "update-index",
        "--split-index",
        env={"GIT_INDEX_FILE": str(index)},
        prefix=prefix,
    )


def snapshot(
    repo_root: Path,
    *,
    ref: str,
    overlays: Mapping[str, bytes] | None = None,
    message: str = "handoff snapshot",
) -> str:
    """:func:`take_snapshot`'s commit."""
    return take_snapshot(repo_root, ref=ref, overlays=overlays, message=message).commit


def take_snapshot(
    repo_root: Path,
    *,
    ref: str,
    overlays: Mapping[str, bytes] | None = None,
    message: str = "handoff snapshot",
    read: Sequence[str] = (),
    added: Callable[[], object] | None = None,
    committed: Callable[[str], object] | None = None,
    start: Path | None = None,
) -> Snapshot:
    """Commit what the developer sees (HEAD + staged + unstaged + untracked + ``overlays``),
    and read ``read`` and the submodule paths of that commit.

    Works on a copy of the index, so the developer's index, files, stash and branches are
    untouched; the commit is kept alive by ``ref``. Five gits in turn (``add -A``, with HEAD's
    lookup and the overlays' blobs beside it; ``update-index`` for the overlays; ``write-tree``;
    ``commit-tree``; the ref's update with the reads beside it). ``start``: a split copy of the
    developer's index to start from instead (agent/keptindex.py; git then writes only the
    entries that differ from its shared index); when git fails on it, the snapshot starts over
    from the developer's index. ``added`` is called once the working tree has been walked
    (after ``add -A``, or on failure), ``committed`` with the commit as soon as it is made
    (before the ref is written and the reads)."""
    repo_root = Path(repo_root)
    if not ref.startswith("refs/"):
        raise GitError(f"snapshot ref must start with 'refs/': {ref}")
    targets = _overlay_targets(repo_root, overlays or {})
    tmpdir = Path(tempfile.mkdtemp(prefix="handoff-index-"))
    try:
        commit = None
        if start is not None:
            try:
                commit = _commit_index(repo_root, start, tmpdir, targets, message, added, SPLIT)
            except GitError as exc:
                log.warning("snapshot from the kept index failed, again from the index: %s", exc)
        if commit is None:
            index = _index_path(repo_root)
            commit = _commit_index(repo_root, index, tmpdir, targets, message, added, ())
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    if committed is not None:
        committed(commit)
    items = [(commit, p) for p in read]
    blob_calls = _blob_calls(items, check=True)
    done = _run_many(
        repo_root,
        [
            (("update-ref", "-m", "handoff: snapshot", ref, commit), None, True),
            _submodule_call(commit),
            *(blob_calls or ()),
        ],
    )
    blobs: list[bytes | None] = []
    if items:
        if blob_calls is None or _converts(done[3], done[4]):  # working-tree form: one by one
            blobs = [read_blob(repo_root, commit, path) for path in read]
        else:
            blobs = _parse_batch(done[2].stdout, len(items))
    return Snapshot(commit, dict(zip(read, blobs, strict=True)), _submodules(done[1]))


# What a git writing a split index is told: only the entries that differ from the shared index
# are written (never a new shared index, which git would put in the developer's git folder), and
# no shared index is ever expired by it.
SPLIT = (
    "-c",
    "core.splitIndex=true",
    "-c",
    "splitIndex.maxPercentChange=100",
    "-c",
    "splitIndex.sharedIndexExpire=never",
)


def _commit_index(
    repo_root: Path,
    index: Path,
    tmpdir: Path,
    targets: Mapping[str, tuple[str, bytes]],
    message: str,
    added: Callable[[], object] | None,
    config: Sequence[str],
) -> str:
    """The commit of the working tree and ``targets``, made on a copy of ``index`` in
    ``tmpdir`` (``config`` before each git that writes it)."""
    tmp_index = tmpdir / "index"
    tmp_index.unlink(missing_ok=True)
    if index.is_file():
        shutil.copy2(index, tmp_index)  # keep mtime: racy-git detection stays correct
    env = {"GIT_INDEX_FILE": str(tmp_index), **IDENTITY}
    listed = sorted({path for path, _ in targets.values()})
    calls: list[tuple[Sequence[str], bytes | None, bool]] = [
        ((*config, "add", "-A", "--", ":/"), None, False),
        (("rev-parse", "-q", "--verify", "HEAD^{commit}"), None, False),
    ]
    if listed:  # the entries before the add: their modes, unless the files say otherwise
        calls.append((("--literal-pathspecs", "ls-files", "-s", "-z", "--", *listed), None, True))
    calls += [
        (("hash-object", "-w", "--stdin", f"--path={path}"), data, True)
        for path, data in targets.values()
    ]
    try:
        added_proc, found, *rest = _run_many(repo_root, calls, env=env)
    finally:
        if added is not None:
            added()
    if added_proc.returncode != 0:
        # e.g. an embedded repository without commits: add what can be added.
        log.warning("git add -A: %s", os.fsdecode(added_proc.stderr).strip())
        added_proc = _run(
            repo_root,
            *config,
            "add",
            "-A",
            "--ignore-errors",
            "--",
            ":/",
            env=env,
            check=False,
        )
        if added_proc.returncode not in (0, 1):  # 1: some files skipped; more: nothing was added
            msg = os.fsdecode(added_proc.stderr).strip() or f"exit code {added_proc.returncode}"
            raise GitError(f"could not snapshot the working tree of {repo_root}: {msg}")
    if targets:
        listing, hashed = rest[0], rest[1:]
        _put_overlays(repo_root, targets, listing.stdout, hashed, env, config)
    tree = _out(repo_root, *config, "write-tree", env=env)
    sha = os.fsdecode(found.stdout).strip() if found.returncode == 0 else ""
    parents = ["-p", sha] if sha else []
    return _out(repo_root, "commit-tree", "--no-gpg-sign", tree, *parents, "-m", message, env=env)


def _overlay_targets(
    repo_root: Path, overlays: Mapping[str, bytes]
) -> dict[str, tuple[str, bytes]]:
    """Each unsaved buffer's path -> (the path its content goes to, the content): the file a
    symlink in the working tree points to, for a symlink (left out when it points outside, or to
    no regular file), and left out for a folder (a submodule's, say)."""
    out: dict[str, tuple[str, bytes]] = {}
    for raw, data in overlays.items():
        path = _check_rel(raw)
        try:
            st = os.lstat(repo_root / path)
        except (FileNotFoundError, NotADirectoryError):
            out[path] = (path, data)  # deleted or never saved: a new file
            continue
        if stat.S_ISLNK(st.st_mode):
            target = _link_target(repo_root, path)
            if target is None:
                log.warning("overlay for %s skipped: not a regular file", path)
                continue
            out[path] = (target, data)
        elif stat.S_ISREG(st.st_mode):
            out[path] = (path, data)
        else:
            log.warning("overlay for %s skipped: not a regular file", path)
    return out


def _put_overlays(
    repo_root: Path,
    targets: Mapping[str, tuple[str, bytes]],
    listing: bytes,
    blobs: Sequence[subprocess.CompletedProcess[bytes]],
    env: Mapping[str, str],
    config: Sequence[str] = (),
) -> None:
    """Put unsaved buffers (their blobs written) into the (temporary) index named by ``env``
    (``config`` before the git that writes it), each with the mode ``git add -A`` gave its
    file: the entry's mode from before the add when the file's executable bit agrees with it,
    else asked of the index after the add."""
    before: dict[str, str] = {}
    for entry in _z(listing):
        meta, _, path = entry.partition("\t")
        before[path] = meta.split(" ")[0]
    modes: dict[str, str] = {}
    unsure = []
    for path, _ in targets.values():
        try:
            st = os.lstat(repo_root / path)
        except (FileNotFoundError, NotADirectoryError):
            modes[path] = "100644"  # the add removed its entry, if it had one
            continue
        executable = bool(st.st_mode & stat.S_IXUSR)
        mode = before.get(path)
        if stat.S_ISREG(st.st_mode) and mode in ("100644", "100755"):
            if (mode == "100755") == executable:
                modes[path] = mode
                continue
        elif stat.S_ISREG(st.st_mode) and mode is None and not executable:
            modes[path] = "100644"
            continue
        unsure.append(path)  # core.fileMode decides, or the file changed kind: git's answer
    if unsure:
        after = _run(
            repo_root, "--literal-pathspecs", "ls-files", "-s", "-z", "--", *unsure, env=env
        ).stdout
        for entry in _z(after):
            meta, _, path = entry.partition("\t")
            modes[path] = meta.split(" ")[0]
    records = []
    for (path, _), blob in zip(targets.values(), blobs, strict=True):
        mode = modes.get(path, "100644")
        if mode not in ("100644", "100755"):
            log.warning("overlay for %s skipped: not a regular file", path)
            continue
        sha = os.fsdecode(blob.stdout).strip()
        records.append(f"{mode} {sha} 0\t".encode() + os.fsencode(path))
    if records:
        _run(
            repo_root,
            *config,
            "update-index",
            "-z",
            "--index-info",
            stdin=b"".join(r + b"\0" for r in records),
            env=env,
        )


def _link_target(repo_root: Path, path: str) -> str | None:
    """The repository-relative path a symlink in the working tree points to, if inside."""
    try:
        real = (repo_root / path).resolve(strict=True)
        rel = real.relative_to(repo_root.resolve())
    except (OSError, ValueError):
        return None
    return rel.as_posix() if real.is_file() else None


# --- session worktrees -----------------------------------------------------------------


def _branch_exists(repo_root: Path, branch: str) -> bool:
    proc = _run(repo_root, "show-ref", "--verify", "--quiet", f"refs/heads/{branch}", check=False)
    return proc.returncode == 0


def add_worktree(repo_root: Path, path: Path, *, branch: str, commit: str) -> None:
    """Check ``commit`` out at ``path`` on a new branch ``branch``."""
    if _branch_exists(repo_root, branch):
        raise GitError(f"branch {branch} exists already in {repo_root}")
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise GitError(f"worktree folder exists already and is not empty: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _add_and_populate(repo_root, path, commit, "-b", branch)
    except GitError as exc:
        if "unable to write" in str(exc) or "No space left" in str(exc):
            free = shutil.disk_usage(path.parent).free
            raise GitError(
                f"{exc}\n(is the disk holding {path.parent} full? {free // 1024} KiB free)"
            ) from None
        raise


def _add_and_populate(
    repo_root: Path, path: Path, commit: str, *how: str, prefix: Sequence[str] = ()
) -> None:
    """``git worktree add --no-checkout`` (``how``: on a new branch, or detached), a short
    command under the repository's admin lock; then the checkout (index and files) outside it
    (:func:`_populate`)."""
    _run(
        repo_root,
        "worktree",
        "add",
        "--quiet",
        "--no-checkout",
        *how,
        str(path),
        commit,
        prefix=prefix,
    )
    _populate(path, prefix=prefix)


PARTS_MIN_ENTRIES = 2000  # below this, one git's checkout costs less than starting several
# What every git of a checkout in parts reads and writes: a plain version 2 index, whole.
_PARTS_CONFIG = (
    *("-c", "index.version=2", "-c", "core.splitIndex=false", "-c", "index.sparse=false"),
    *("-c", "core.untrackedCache=false", "-c", "checkout.workers=1"),
)


def _populate(path: Path, *, prefix: Sequence[str] = ()) -> None:
    """Check a worktree made with ``--no-checkout`` out at its HEAD: its index and files.

    With several cores and a tree of at least ``PARTS_MIN_ENTRIES`` files, in parts
    (:func:`_checkout_in_parts`); else, or for a sparse checkout, git's own ``reset --hard``
    with parallel checkout (``checkout.workers``, git 2.32+; older gits ignore it)."""
    parts = os.cpu_count() or 1
    if parts > 1 and _checkout_in_parts(path, parts, prefix):
        return
    _run(path, "-c", _checkout_workers(), "reset", "--quiet", "--hard", prefix=prefix)


def _checkout_in_parts(path: Path, parts: int, prefix: Sequence[str]) -> bool:
    """The tree split into ``parts`` contiguous ranges of its files, each written by its own
    ``git checkout-index`` (serial) into its own copy of the index, all at once, into folders
    made beforehand (``Plan.folders``); the index of the whole is then spliced from the copies
    (agent/gitindex.py). Git's parallel checkout hands every file from one process to its
    workers and theirs write side by side in the same folders: on two cores this does the same
    work in 0.7-0.9 of its time (bench/RESULTS.md). False (nothing left of it) when the tree
    is small, the repository has a sparse checkout, or the index is not one this can split."""
    index = worktree_index(path)
    _read, fmt, sparse = _run_many(
        path,
        [
            ((*_PARTS_CONFIG, "read-tree", "HEAD"), None, True),
            (("rev-parse", "--show-object-format"), None, True),
            (("config", "--bool", "core.sparseCheckout"), None, False),
        ],
        prefix=prefix,
    )
    layout, data = None, b""
    if sparse.stdout.strip() != b"true":
        hash_size = {b"sha1": 20, b"sha256": 32}.get(fmt.stdout.strip(), 0)
        data = index.read_bytes()
        layout = gitindex.plan(data, parts, hash_size)
    if layout is None or layout.count < PARTS_MIN_ENTRIES:
        index.unlink(missing_ok=True)  # git's own checkout starts from no index, as before
        return False
    root = os.fsencode(path) + b"/"
    for folder in layout.folders():
        with contextlib.suppress(FileExistsError):
            os.mkdir(root + folder)
    copies = [index] + [index.with_name(f"index.handoff-part{k}") for k in range(1, parts)]
    lists = [index.with_name(f"index.handoff-part{k}.paths") for k in range(parts)]
    try:
        for copy in copies[1:]:
            copy.write_bytes(data)
        for k in range(parts):
            lists[k].write_bytes(layout.paths(k))
        _run_parts(
            path,
            ("checkout-index", "-u", "-f", "-z", "--stdin"),
            [(copies[k], lists[k]) for k in range(parts)],
            prefix,
        )
        try:
            whole = gitindex.splice(layout, [c.read_bytes() for c in copies])
        except ValueError as exc:  # every file is written; git makes the index over them
            log.warning("the checkout of %s in parts: %s; git's own reset --hard", path, exc)
            index.unlink(missing_ok=True)
            return False
        write_file(index, whole, fsync=False)
    finally:
        for extra in [*copies[1:], *lists]:
            extra.unlink(missing_ok=True)
    return True


def _run_parts(
    path: Path, args: Sequence[str], parts: Sequence[tuple[Path, Path]], prefix: Sequence[str]
) -> None:
    """``git *args`` once per ``(index, stdin file)`` in ``parts``, all at once, in ``path``."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for index, paths in parts:
            with open(paths, "rb") as stdin:
                procs.append(
                    subprocess.Popen(
                        [*prefix, *git_argv(*_PARTS_CONFIG, *args)],
                        cwd=path,
                        env=_env({"GIT_INDEX_FILE": str(index)}),
                        stdin=stdin,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                )
    except FileNotFoundError as exc:
        _not_found(path, exc)
    finally:
        done = [(p, p.communicate()[1]) for p in procs]
    for proc, err in done:
        _check(path, args, subprocess.CompletedProcess(proc.args, proc.returncode, b"", err))


def _checkout_workers() -> str:
    return f"checkout.workers={os.cpu_count() or 1}"


def add_detached_worktree(
    repo_root: Path, path: Path, commit: str, *, prefix: Sequence[str] = ()
) -> None:
    """An idle worktree of ``commit`` at ``path``, on no branch (the warm pool's), its index's
    stat data then refreshed once (``refresh_index``) so that moving it to another commit later
    compares stat data, not contents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _add_and_populate(repo_root, path, commit, "--detach", prefix=prefix)


def worktree_index(worktree: Path) -> Path:
    """The index file of a linked worktree (in its admin folder, which its ``.git`` names)."""
    link = (Path(worktree) / ".git").read_text("utf-8", "replace").strip()
    if link.startswith("gitdir:"):  # what git wrote: the worktree's admin folder holds its index
        return Path(worktree, link[len("gitdir:") :].strip(), "index")
    return Path(_out(worktree, "rev-parse", "--path-format=absolute", "--git-path", "index"))


def trust_fresh_checkout(worktree: Path) -> None:
    """Let git trust the stat data of a checkout it has just made, before anything else has
    written into it: the worktree's index gets a modification time a second ahead of every file
    git wrote (git's racy-file check, without nanoseconds, compares whole seconds: every file
    written in the index's own second would otherwise be read and hashed again by the next git
    call that writes the index, ~0.1 s on 20,000 files). Sound only for a folder no one else
    writes into between the checkout and the next index write (a fresh worktree of Handoff's
    own, before its agent starts): that write stamps the index with the real time again."""
    index = worktree_index(worktree)
    st = index.stat()
    ahead = int(max(st.st_mtime, time.time())) + 1
    os.utime(index, (ahead, ahead))


def refresh_index(worktree: Path, *, prefix: Sequence[str] = ()) -> None:
    """``git update-index --refresh`` in ``worktree``: files written in the same second as the
    index are "racily clean" and compared by content at every checkout until the index is
    written again, later than them (call this at least a second after the files were written).
    The index is then split (its shared index in the worktree's own admin folder, gone with
    it), so the checkout that later moves the worktree to a snapshot writes a few KB, not the
    whole index (~9 of its ~20 ms on 20,000 files)."""
    _run(worktree, "update-index", "-q", "--refresh", check=False, prefix=prefix)
    # its own call: a refresh that changes nothing writes nothing, and splits nothing either
    _run(
        worktree,
        *("-c", "splitIndex.sharedIndexExpire=never", "update-index", "--split-index"),
        check=False,
        prefix=prefix,
    )


def move_worktree(repo_root: Path, src: Path, dest: Path) -> None:
    """``git worktree move``: a rename, with git's records of the worktree kept true."""
    if dest.exists():
        raise GitError(f"worktree folder exists already: {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _run(repo_root, "worktree", "move", str(src), str(dest))


def switch_worktree(worktree: Path, *, branch: str, commit: str, clean: bool = True) -> None:
    """Put a (pooled) worktree on a new branch ``branch`` at ``commit``, pristine: only the
    files that differ between its checkout and ``commit`` are written (a two-way checkout,
    forced: a local change is overwritten), then every untracked and ignored file is removed
    (``git clean -ffdx``: nested repositories too; ``clean=False`` for a checkout just made, which
    holds nothing else, saves that walk of the tree)."""
    if _branch_exists(worktree, branch):
        raise GitError(f"branch {branch} exists already in {worktree}")
    _run(
        worktree,
        "-c",
        _checkout_workers(),
        "checkout",
        "--quiet",
        "--force",
        "--no-recurse-submodules",
        "-b",
        branch,
        commit,
    )
    if clean:
        _run(worktree, "clean", "-ffdxq")


PATHS_MAX = 64  # more paths than this: git's pathspec match of every entry costs more than a
# two-way read-tree (each entry is matched against each path)


def branch_pristine_worktree(worktree: Path, *, branch: str, commit: str, head: str) -> None:
    """Put a worktree known to be pristine (just checked out and trusted, or cleaned and reset:
    :func:`make_pristine`), detached at ``head``, on a new branch ``branch`` at ``commit``,
    writing only the files that differ (``diff-tree`` of the two commits) and reading only their
    index entries: ``git checkout --no-overlay <commit> -- <those paths>`` (files added, changed
    and removed; git's ``checkout`` of a commit would first stat every file of the tree, and a
    two-way ``read-tree -m -u`` makes every entry of the index anew: 0.25 s on 100,000 files);
    with more than ``PATHS_MAX`` of them, the two-way ``read-tree``. The branch (it must not
    exist yet), the files and HEAD's move depend on no other's result and run at once. The
    caller removes the worktree and its branch when it fails (nothing of the developer's is in
    it)."""
    listed = _run(
        worktree,
        *("diff-tree", "-r", "-z", "--no-renames", "--name-only", head, commit),
        # two commits are compared: no index is needed, and git would read it whole
        env={"GIT_INDEX_FILE": f"{worktree_index(worktree)}.none"},
    ).stdout
    listed_paths = {p for p in listed.split(b"\0") if p}
    # a path under another listed one (a file that became a folder, or the reverse) is that
    # one's: git counts a path its pathspec left nothing to match as an error
    paths = sorted(
        p for p in listed_paths if not any(up in listed_paths for up in gitindex.parents(p))
    )
    if len(paths) > PATHS_MAX:
        files: tuple[Sequence[str], bytes | None, bool] = (
            ("-c", _checkout_workers(), "read-tree", "-m", "-u", head, commit),
            None,
            True,
        )
    else:
        files = (
            (
                "--literal-pathspecs",
                *("-c", "core.preloadIndex=false"),  # its threads match every entry again
                "checkout",
                "--quiet",
                "--no-overlay",
                commit,
                "--pathspec-from-file=-",
                "--pathspec-file-nul",
            ),
            b"".join(p + b"\0" for p in paths),
            True,
        )
    calls = [
        (("update-ref", f"refs/heads/{branch}", commit, ""), None, True),  # "": must be new
        (("symbolic-ref", "HEAD", f"refs/heads/{branch}"), None, True),
    ]
    _run_many(worktree, [*calls, files] if paths else calls)


def make_pristine(worktree: Path, *, clean: bool = True, prefix: Sequence[str] = ()) -> None:
    """Every untracked and ignored file removed (nested repositories too: ``git clean -ffdx``)
    and every tracked file as its HEAD has it: ``git diff-files`` looks (beside the clean: they
    read the index, neither writes it), and only a change found costs a ``git reset --hard``.
    ``clean=False`` when no file can have been made in it (its folders are as they were made):
    the clean's walk of the whole tree is saved."""
    calls: list[tuple[Sequence[str], bytes | None, bool]] = [
        (("diff-files", "--quiet", "--ignore-submodules"), None, False)
    ]
    if clean:
        calls.append((("clean", "-ffdxq"), None, True))
    changed = _run_many(worktree, calls, prefix=prefix)[0]
    if changed.returncode not in (0, 1):
        _check(worktree, ("diff-files",), changed)
    if changed.returncode == 1:
        _run(
            worktree, "-c", _checkout_workers(), "reset", "--hard", "-q", "--no-recurse-submodules"
        )


def untracked_entries(worktree: Path, *, prefix: Sequence[str] = ()) -> list[str]:
    """Every file of the working tree that is not tracked, ignored or not (a folder holding only
    such files as one entry ending in ``/``)."""
    return _z(_run(worktree, "ls-files", "-z", "--others", "--directory", prefix=prefix).stdout)


def ignored_entries(repo_root: Path) -> list[str]:
    """The ignored files of the working tree, an ignored folder as one entry ending in ``/``."""
    out = _run(
        repo_root, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"
    ).stdout
    return _z(out)


def common_dir(path: Path) -> Path | None:
    """The git folder shared by every worktree of the repository at ``path``; None outside git."""
    proc = _run(path, "rev-parse", "--path-format=absolute", "--git-common-dir", check=False)
    out = os.fsdecode(proc.stdout).strip()
    return Path(out) if proc.returncode == 0 and out else None


def config_entries(config_file: Path) -> list[tuple[str, str]]:
    """The (key, value) pairs of one git config file, includes not followed."""
    out = _run(
        Path(config_file).parent,
        "config",
        "--file",
        str(config_file),
        "--no-includes",
        "--list",
        "-z",
    ).stdout
    entries = []
    for item in out.split(b"\0"):
        if item:
            key, _, value = os.fsdecode(item).partition("\n")
            entries.append((key, value))
    return entries


def check_worktree_link(repo_root: Path, worktree: Path) -> None:
    """Raise GitError unless ``worktree/.git`` is still the file git wrote, pointing at this
    repository's admin folder for that worktree. Git is never run in a worktree whose link
    an agent replaced (it could point git at the developer's own repository)."""
    link = Path(worktree) / ".git"
    problem = None
    try:
        st = os.lstat(link)
    except FileNotFoundError:
        st = None
        problem = "is missing"
    if st is not None and not stat.S_ISREG(st.st_mode):
        problem = "is not the file git wrote (it was replaced by a folder or a link)"
    elif st is not None:
        text = link.read_bytes()[:4096].decode("utf-8", "replace").strip()
        target = text[len("gitdir:") :].strip() if text.startswith("gitdir:") else ""
        common = common_dir(repo_root)
        if (
            not target
            or common is None
            or not _same_path(
                Path(os.path.realpath(Path(worktree, target))).parent, common / "worktrees"
            )
        ):
            problem = f"points somewhere else ({text[:200]!r})"
    if problem:
        raise GitError(
            f"the session's worktree {worktree} was tampered with: its .git {problem}; "
            "the result was not collected"
        )


def exclude_pathspecs(globs: Sequence[str]) -> list[str]:
    """git pathspecs leaving out ``globs`` (gitignore-like: no slash matches at any depth, a
    trailing slash means a folder and all in it)."""
    specs = []
    for g in globs:
        folder, anchored = g.endswith("/"), "/" in g.rstrip("/")
        g = g.strip("/")
        if not anchored and not g.startswith("**"):
            g = f"**/{g}"
        specs += [f":(exclude,glob){g}/**"] + ([] if folder else [f":(exclude,glob){g}"])
    return specs


def commit_worktree(worktree: Path, message: str, exclude: Sequence[str] = ()) -> str:
    """Commit everything in ``worktree`` (if anything changed) but what ``exclude`` names;
    return its HEAD commit."""
    _run(worktree, "add", "-A", "--", ":/", *exclude_pathspecs(exclude))
    staged = _run(worktree, "diff", "--cached", "--quiet", "--no-ext-diff", check=False)
    if staged.returncode == 1:
        _run(
            worktree,
            "commit",
            "-q",
            "--no-verify",
            "--no-gpg-sign",
            "--allow-empty-message",
            "-m",
            message,
            env=IDENTITY,
        )
    elif staged.returncode != 0:
        raise GitError(f"git diff failed in {worktree}: {os.fsdecode(staged.stderr).strip()}")
    return _out(worktree, "rev-parse", "HEAD")


def worktrees(repo_root: Path) -> list[dict[str, str]]:
    """``git worktree list --porcelain -z`` as dicts (keys: worktree, HEAD, branch, ...)."""
    out = _run(repo_root, "worktree", "list", "--porcelain", "-z").stdout
    records = (
        [os.fsdecode(f).partition(" ") for f in block.split(b"\0") if f]
        for block in out.split(b"\0\0")
    )
    return [{key: value for key, _, value in fields} for fields in records if fields]


def _same_path(a: str | Path, b: str | Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _remove_worktree(repo_root: Path, worktree: Path) -> None:
    proc = _run(repo_root, "worktree", "remove", "--force", "--force", str(worktree), check=False)
    _run(repo_root, "worktree", "prune")
    if proc.returncode == 0:
        return
    # Git refuses e.g. worktrees with initialised submodules, or folders it no longer knows:
    # a linked worktree (its .git is a file) is ours to delete.
    if worktree.is_dir() and (worktree / ".git").is_file():
        shutil.rmtree(worktree)
        _run(repo_root, "worktree", "prune")
    if any(_same_path(w["worktree"], worktree) for w in worktrees(repo_root)[1:]):
        raise GitError(f"could not remove worktree {worktree}: {os.fsdecode(proc.stderr).strip()}")


def remove_worktree_and_branch(repo_root: Path, worktree: Path, branch: str) -> None:
    """Remove one worktree and its branch (not a session's refs)."""
    _remove_worktree(Path(repo_root), Path(worktree))
    if _branch_exists(repo_root, branch):
        _run(repo_root, "branch", "-D", "--", branch)


def remove_session(repo_root: Path, *, worktree: Path | None, branch: str, ref_prefix: str) -> None:
    """Remove a session's worktree, branch and refs; missing pieces are fine (idempotent)."""
    repo_root = Path(repo_root)
    if worktree is not None and _same_path(worktree, find_repo_root(repo_root)):
        raise GitError(f"refusing to remove the developer's working tree {worktree}")
    targets = [Path(worktree)] if worktree is not None else []
    for entry in worktrees(repo_root)[1:]:  # [0] is the developer's own working tree
        if entry.get("branch") == f"refs/heads/{branch}" and not any(
            _same_path(entry["worktree"], t) for t in targets
        ):
            targets.append(Path(entry["worktree"]))
    for target in targets:
        _remove_worktree(repo_root, target)
    _run(repo_root, "worktree", "prune")
    if _branch_exists(repo_root, branch):
        _run(repo_root, "branch", "-D", "--", branch)
    prefix = ref_prefix if ref_prefix.endswith("/") else ref_prefix + "/"
    if not prefix.startswith("refs/") or prefix.count("/") < 3:
        raise GitError(f"refusing to delete refs under {ref_prefix!r}")
    refs = _refs(repo_root, prefix)
    if refs:
        _run(
            repo_root,
            "update-ref",
            "--stdin",
            "-z",
            stdin=b"".join(b"delete " + os.fsencode(r) + b"\0\0" for r in refs),
        )


def _refs(repo_root: Path, prefix: str) -> list[str]:
    out = _out(repo_root, "for-each-ref", "--format=%(refname)", prefix.rstrip("/"))
    return [r for r in out.splitlines() if r.startswith(prefix)]


def gc(repo_root: Path, *, keep: Callable[[str], bool]) -> list[str]:
    """Remove the branches, refs and worktrees of every session ``keep(id)`` rejects."""
    repo_root = Path(repo_root)
    _run(repo_root, "worktree", "prune")
    ids: dict[str, Path | None] = {}
    for name in _out(
        repo_root,
        "for-each-ref",
        "--format=%(refname:lstrip=3)",
        f"refs/heads/{BRANCH_PREFIX.rstrip('/')}",
    ).splitlines():
        ids.setdefault(name, None)
    for ref in _refs(repo_root, REF_ROOT):
        ids.setdefault(ref[len(REF_ROOT) :].split("/", 1)[0], None)
    for entry in worktrees(repo_root)[1:]:
        branch = entry.get("branch", "")
        if branch.startswith(f"refs/heads/{BRANCH_PREFIX}"):
            ids[branch[len(f"refs/heads/{BRANCH_PREFIX}") :]] = Path(entry["worktree"])
    removed = []
    for sid, wt in sorted(ids.items()):
        if not sid or keep(sid):
            continue
        try:
            remove_session(
                repo_root, worktree=wt, branch=BRANCH_PREFIX + sid, ref_prefix=f"{REF_ROOT}{sid}/"
            )
        except GitError as exc:
            log.warning("gc: session %s not removed: %s", sid, exc)
            continue
        removed.append(sid)
    return removed


def merge_file(
    ours: bytes, base: bytes, theirs: bytes, labels: tuple[str, str, str], *extra: str
) -> tuple[bytes, int]:
    """``git merge-file -p --diff3`` of three blobs: (output, number of conflicts)."""
    with tempfile.TemporaryDirectory(prefix="handoff-merge-") as tmp:
        names = []
        for name, data in (("ours", ours), ("base", base), ("theirs", theirs)):
            (Path(tmp) / name).write_bytes(data)
            names.append(str(Path(tmp) / name))
        args = ["merge-file", "-p", "--diff3", *extra]
        for label in labels:
            args += ["-L", label]
        proc = _run(Path(tmp), *args, *names, check=False)
    if proc.returncode > 127 or proc.returncode < 0:
        msg = os.fsdecode(proc.stderr).strip() or f"exit code {proc.returncode}"
        raise GitError(f"git merge-file failed: {msg}")
    return proc.stdout, proc.returncode


# --- reading results -------------------------------------------------------------------

_STATUS: dict[str, Literal["added", "modified", "deleted", "renamed"]] = {
    "A": "added",
    "M": "modified",
    "D": "deleted",
    "R": "renamed",
    "T": "modified",
}


def changes(repo_root: Path, base: str, result: str) -> list[FileChange]:
    """Files that differ between two commits, renames detected, binary files flagged, with
    their git modes before and after (``100644``, ``100755``, ``120000`` for a symlink)."""
    return _parse_changes(_run(repo_root, *_changes_args(base, result)).stdout)


def _changes_args(base: str, result: str) -> tuple[str, ...]:
    # one git for both: the raw records, then the numstat ones (binary files: "-\t-\t")
    return ("diff", "--raw", "--numstat", "-z", *_DIFF_OPTS, base, result, "--")


def _parse_changes(out: bytes) -> list[FileChange]:
    fields = _z(out)
    found: list[FileChange] = []
    i = 0
    while i < len(fields) and fields[i].startswith(":"):  # a path is never at a record's start
        meta = fields[i].lstrip(":").split(" ")
        if len(meta) < 5:
            raise GitError(f"unexpected git diff --raw output: {fields[i]!r}")
        old_mode, new_mode, code = meta[0], meta[1], meta[4][:1]
        if code in "RC":
            old, new = fields[i + 1], fields[i + 2]
            i += 3
            if code == "C":  # not asked for, but never lose a file
                found.append(FileChange(new, "added", new_mode=new_mode))
            else:
                found.append(
                    FileChange(new, "renamed", old_path=old, old_mode=old_mode, new_mode=new_mode)
                )
            continue
        path = fields[i + 1]
        i += 2
        if code not in _STATUS:
            raise GitError(f"unexpected change '{code}' for {path}")
        found.append(
            FileChange(
                path,
                _STATUS[code],
                old_mode="" if code == "A" else old_mode,
                new_mode="" if code == "D" else new_mode,
            )
        )
    binary = _binary_paths(fields[i:])
    for change in found:
        change.binary = change.path in binary
    return found


def _binary_paths(fields: list[str]) -> set[str]:
    """The binary files of ``--numstat -z`` records (split at NUL)."""
    binary: set[str] = set()
    i = 0
    while i < len(fields):
        added, deleted, path = fields[i].split("\t", 2)
        if path:  # plain entry: "added\tdeleted\tpath"
            i += 1
        else:  # rename: "added\tdeleted\t" NUL old NUL new
            path = fields[i + 2]
            i += 3
        if added == "-" and deleted == "-":
            binary.add(path)
    return binary


def read_blob(repo_root: Path, commit: str, path: str) -> bytes | None:
    """A file's content at ``commit`` in working-tree form (eol/filters applied); None if absent."""
    for mode in ("--filters", "blob"):  # raw content if a filter (e.g. LFS) is unavailable
        proc = _run(repo_root, "cat-file", mode, f"{commit}:{path}", check=False)
        if proc.returncode == 0:
            return proc.stdout
    if (
        _run(
            repo_root, "rev-parse", "-q", "--verify", f"{commit}^{{commit}}", check=False
        ).returncode
        != 0
    ):
        raise GitError(f"no such commit in {repo_root}: {commit}")
    return None


_CONVERSIONS = ("text", "eol", "crlf", "filter", "ident", "working-tree-encoding")


def read_blobs(repo_root: Path, items: Sequence[tuple[str, str]]) -> list[bytes | None]:
    """``read_blob`` for many ``(commit, path)`` at once: one ``git cat-file --batch`` (raw blobs)
    when no attribute and no ``core.autocrlf`` asks for a checkout conversion of any of the paths,
    else one ``read_blob`` each. (``--batch --filters`` would be one call too, but before git 2.42
    its headers give the unfiltered size, so its output cannot be parsed.) The check and the batch
    run at once (the batch's answer is dropped when a conversion applies)."""
    if not items:
        return []
    converts, raw = read_raw_blobs(repo_root, items, check=True)
    if converts:
        return [read_blob(repo_root, commit, path) for commit, path in items]
    return raw


def converts(repo_root: Path, paths: Sequence[str]) -> bool:
    """Whether a checkout conversion (``core.autocrlf``, an eol/filter/... attribute) applies to
    any of ``paths``: then raw blobs are not what ``read_blob`` gives. Two gits, run at once."""
    paths = sorted(set(paths))
    if any("\n" in p for p in paths):
        return True
    config, attrs = _run_many(repo_root, _convert_calls(paths))
    return _converts(config, attrs)


def _convert_calls(paths: Sequence[str]) -> list[tuple[Sequence[str], bytes | None, bool]]:
    return [
        (("config", "--get", "core.autocrlf"), None, False),
        (
            ("check-attr", "-z", "--stdin", *_CONVERSIONS),
            b"".join(os.fsencode(p) + b"\0" for p in paths),
            True,
        ),
    ]


def _converts(
    config: subprocess.CompletedProcess[bytes], attrs: subprocess.CompletedProcess[bytes]
) -> bool:
    values = attrs.stdout.split(b"\0")[2::3]  # path NUL attribute NUL value NUL
    return config.stdout.strip().lower() in (b"true", b"1", b"yes", b"on") or any(
        v not in (b"unspecified", b"unset") for v in values if v
    )


def read_raw_blobs(
    repo_root: Path, items: Sequence[tuple[str, str]], *, check: bool = False
) -> tuple[bool, list[bytes | None]]:
    """The raw blobs of ``items`` (one ``git cat-file --batch``, None where absent) and, with
    ``check``, whether a checkout conversion applies to any of their paths (``converts``; raw
    blobs are then not what ``read_blob`` gives), asked of git at the same time. A path with a
    line end cannot go through the batch: (True, []) then, whatever ``check``."""
    calls = _blob_calls(items, check=check)
    if calls is None:
        return True, []
    done = _run_many(repo_root, calls)
    conv = check and _converts(done[1], done[2])
    return conv, _parse_batch(done[0].stdout, len(items))


def _blob_calls(
    items: Sequence[tuple[str, str]], *, check: bool
) -> list[tuple[Sequence[str], bytes | None, bool]] | None:
    """The gits of :func:`read_raw_blobs` (the batch, then ``_convert_calls`` with ``check``);
    None when a path cannot go through the batch, [] for no items."""
    if not items:
        return []
    paths = sorted({p for _, p in items})
    if any("\n" in p for p in paths):
        return None
    batch = b"".join(os.fsencode(f"{c}:{p}") + b"\n" for c, p in items)
    calls: list[tuple[Sequence[str], bytes | None, bool]] = [(("cat-file", "--batch"), batch, True)]
    if check:
        calls += _convert_calls(paths)
    return calls


def _parse_batch(data: bytes, count: int) -> list[bytes | None]:
    blobs: list[bytes | None] = []
    pos = 0
    for _ in range(count):
        eol = data.index(b"\n", pos)
        header = data[pos:eol].rsplit(b" ", 2)
        pos = eol + 1
        if header[-1] in (b"missing", b"ambiguous") or len(header) < 3:
            blobs.append(None)  # absent, as read_blob says
            continue
        size = int(header[2])
        blobs.append(data[pos : pos + size] if header[1] == b"blob" else None)
        pos += size + 1
    return blobs


def submodule_paths(repo_root: Path, commit: str) -> list[str]:
    """The submodule paths ``.gitmodules`` names at ``commit`` (a session's worktree has none of
    their contents); [] when there is none."""
    args, _, _ = _submodule_call(commit)
    return _submodules(_run(repo_root, *args, check=False))


def _submodule_call(commit: str) -> tuple[Sequence[str], bytes | None, bool]:
    args = ("config", "-z", "--blob", f"{commit}:.gitmodules", "--get-regexp")
    return ((*args, r"^submodule\..*\.path$"), None, False)


def _submodules(proc: subprocess.CompletedProcess[bytes]) -> list[str]:
    if proc.returncode != 0:
        return []
    return sorted(os.fsdecode(item).partition("\n")[2] for item in proc.stdout.split(b"\0") if item)


def diff_text(repo_root: Path, base: str, result: str, *, paths: Sequence[str] = ()) -> str:
    """A unified diff between two commits, for people to read (``handoff show``)."""
    out = _run(
        repo_root, "-c", "core.quotePath=false", "diff", *_DIFF_OPTS, base, result, "--", *paths
    ).stdout
    return out.decode("utf-8", errors="replace")
