"""The warm pool: idle worktrees of a repository, made ahead so that a session starts at once.

``pool.size`` (default 2; 0 turns it off) idle worktrees per repository live in
``repos/<name>-<hash>/pool/p-<hex>/``, each beside its record ``p-<hex>.json`` (``ready`` once
the worktree is whole). They are made in the background, at idle priority (``nice 19``,
``ionice -c 3``), one at a time, on no branch at the repository's HEAD.

A session *takes* one (:meth:`Pool.take`): its record is deleted first (from then on it is in
no pool, whatever happens), the folder is renamed into the session's place
(``worktrees/<id>/``, ``git worktree move``), and there it is moved to the session's snapshot on
the session's branch (only the files that differ are written) and made pristine: every tracked
file as its commit has it, and no other file. Each idle worktree is watched (agent/watch.py,
inotify, every folder) from when it was made and checked: one nothing wrote in since is pristine
as it is, and costs no look at its files. Else ``git diff-files`` finds the tracked files to put
back, and ``git clean -ffdx`` (a walk of the whole tree) removes the rest, unless each of its
folders still has the inode and ctime stamped in ``p-<hex>.dirs`` when it was made (a file made,
removed or renamed in a folder moves the folder's ctime): what holds after a restart of the
daemon, which loses the watches. A session that can start at once has its worktree readied
while its snapshot is taken
(:meth:`Pool.early`): an idle one claimed the same way and made pristine, or, when the pool is off
or empty, a checkout of HEAD made there and then; :meth:`Pool.take_early` then renames it into
place and branches it at the snapshot, writing only the files that differ. A worktree never
goes back: the pool only ever holds worktrees it made itself in its own folder, and a session's
worktree is never in that folder. So no session ever gets a worktree that holds or held another
session's work, also across a restart of the daemon
(Claude Code's anthropics/claude-code#77268 recycled one and lost a session's work). What a
crash leaves half-made in the pool folder (no ``ready`` record) is removed at the next start.

Also here: ``worktree.include`` (ignored files of the developer's tree copied into a session's
worktree, copy-on-write where the file system can) and ``worktree.setup`` (a command run in the
worktree, in the sandbox, before the agent).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from handoff.files import atomic_write

from . import gitops
from .watch import Watch

log = logging.getLogger(__name__)

PREFIX = "p-"
AIM_WAIT_S = 3600.0  # the longest a readied worktree waits for its session's snapshot
GO_WAIT_S = 2.0  # the longest a pooled worktree's check waits for the snapshot's walk
RACY_WAIT_S = 1.1  # git's index timestamps have a granularity of one second


def idle_prefix() -> list[str]:
    """argv run before git's for the pool's background work: the lowest CPU and I/O priority."""
    out: list[str] = []
    if shutil.which("nice"):
        out += ["nice", "-n", "19"]
    if shutil.which("ionice"):
        out += ["ionice", "-c", "3"]
    return out


def is_pooled(path: str | Path) -> bool:
    """Whether a worktree folder is an idle pooled one (what ``git worktree list`` shows of the
    pool: ``…/repos/<name>-<hash>/pool/p-<hex>``, or ``pool-<name>-<hash>/`` for a linked
    worktree's own pool, detached)."""
    p = Path(path)
    return (p.parent.name == "pool" or p.parent.name.startswith("pool-")) and p.name.startswith(
        PREFIX
    )


def _dir_stamps(path: Path) -> list[list[Any]]:
    """``[relative path, inode, ctime in ns]`` of every folder of a worktree (its root first): a
    file made, removed or renamed in a folder, or the folder's own change, moves its ctime, which
    nothing can set back."""
    found = []
    stack = [""]
    while stack:
        rel = stack.pop()
        folder = os.path.join(path, rel)
        st = os.lstat(folder)
        found.append([rel, st.st_ino, st.st_ctime_ns])
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(os.path.join(rel, entry.name) if rel else entry.name)
    return found


def _du(path: Path) -> int:
    """Bytes a folder takes on disk (allocated blocks), symlinks not followed."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


class Early:
    """A worktree being readied for one session beside its snapshot (:meth:`Pool.early`), then
    taken into the session's place once the snapshot is committed (:meth:`Pool.aim`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pooled = False  # an idle pooled worktree (else a checkout made now)
        self.quiet = False  # pooled, and nothing was written in it since it was made (no check)
        self.head = ""  # the commit it is at, once readied
        self.thread: threading.Thread
        self.error: BaseException | None = None
        self.started = self.done = 0.0  # time.monotonic() of the readying's start and end
        # set once the snapshot beside it has walked the developer's tree (``take_snapshot``'s
        # ``added``): a pooled worktree's check waits for it rather than share the cores with it
        self.go = threading.Event()
        # where it goes (the session's folder, branch and snapshot), or None when dropped
        self.target: tuple[Path, str, str] | None = None
        self.aimed = threading.Event()
        self.taken = False  # it is the session's worktree, on its branch at its snapshot
        self.moved_s = 0.0  # how long the move to the snapshot took


class Pool:
    """The idle worktrees of one repository (the daemon's, one per ``SessionManager``)."""

    def __init__(self, repo_root: Path, folder: Path, git_lock: threading.Lock) -> None:
        self.repo_root = Path(repo_root)
        self.folder = Path(folder)
        self._git_lock = git_lock  # the manager's: worktree moves and removals one at a time
        self._lock = threading.Lock()  # takes and trims against each other
        self._size = 0
        self._filler: threading.Thread | None = None
        self._making: str | None = None  # the name being made now
        self._early: set[str] = set()  # names of early() worktrees not taken or dropped yet
        self._stop = threading.Event()
        # every folder of each idle worktree, watched from when it was made: a take of one that
        # nothing wrote in (quiet) skips the look at its files (``git diff-files``, ``clean``)
        self._watch = Watch()

    # -- records ---------------------------------------------------------------------------
    def _record(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def _stamps(self, name: str) -> Path:
        """The stamps of a pooled worktree's folders as made (``_dir_stamps``): a take that finds
        them unchanged skips the walk of ``git clean``."""
        return self.folder / f"{name}.dirs"

    def _checked(self, path: Path) -> tuple[bool, bool]:
        """``(quiet, untouched)`` of a claimed idle worktree, read once, before it moves: quiet,
        nothing was written in it since it was made and checked (its watch); untouched, no file
        was made, removed or renamed in it (its folders' stamps; what holds after a restart of
        the daemon, which loses the watches)."""
        quiet = self._watch.quiet(path.name)
        self._watch.forget(path.name)
        untouched = self._untouched(path)
        return quiet, quiet or untouched

    def _untouched(self, path: Path) -> bool:
        """Whether no file was made, removed or renamed in a pooled worktree since it was made:
        each of its folders as stamped then (the stamps are used up: a take reads them once)."""
        stamps = self._stamps(path.name)
        try:
            recorded = json.loads(stamps.read_bytes())
        except (OSError, ValueError):
            return False
        finally:
            stamps.unlink(missing_ok=True)
        try:
            for rel, ino, ctime in recorded:
                st = os.lstat(os.path.join(path, rel))
                if (st.st_ino, st.st_ctime_ns) != (ino, ctime):
                    return False
        except (OSError, TypeError, ValueError):
            return False
        return bool(recorded)

    def ready(self) -> list[tuple[str, dict[str, Any]]]:
        """The pooled worktrees ready to be taken, oldest first: (name, record)."""
        found = []
        for rec in self.folder.glob(f"{PREFIX}*.json"):
            try:
                data = json.loads(rec.read_text("utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("state") == "ready":
                found.append((rec.stem, data))
        return sorted(found, key=lambda item: item[1].get("createdAt", 0))

    def usage(self) -> dict[str, int]:
        """``{worktrees, bytes}``: the idle worktrees and the disk they take (as recorded when
        each was made; no walk of the tree)."""
        ready = self.ready()
        return {
            "worktrees": len(ready),
            "bytes": sum(int(r.get("bytes", 0)) for _, r in ready),
        }

    # -- making ----------------------------------------------------------------------------
    def ensure(self, size: int) -> None:
        """Keep ``size`` idle worktrees: make the missing ones in a background thread (one at a
        time), remove those beyond it."""
        self._size = max(0, size)
        if len(self.ready()) > self._size:
            self.trim(self._size)
        if self._size and (self._filler is None or not self._filler.is_alive()):
            self._stop.clear()
            self._filler = threading.Thread(target=self._fill, name="handoff-pool", daemon=True)
            self._filler.start()

    def _fill(self) -> None:
        while not self._stop.is_set() and len(self.ready()) < self._size:
            commit, _ = gitops.head(self.repo_root)
            if commit is None:  # no commit yet: nothing to check out
                return
            try:
                self._make(commit)
            except (gitops.GitError, OSError) as exc:
                log.warning("pool of %s: a worktree could not be made: %s", self.repo_root, exc)
                return

    def _make(self, commit: str) -> None:
        name = PREFIX + secrets.token_hex(6)
        path = self.folder / name
        self._making = name
        prefix = idle_prefix()
        try:
            gitops.add_detached_worktree(self.repo_root, path, commit, prefix=prefix)
            self._stop.wait(RACY_WAIT_S)
            if self._stop.is_set():
                return  # left without a record: removed at the next start
            gitops.refresh_index(path, prefix=prefix)
            stamps = _dir_stamps(path)
            watched = self._watch.add(name, [os.path.join(path, rel) for rel, _, _ in stamps])
            atomic_write(self._stamps(name), json.dumps(stamps).encode())
            # after the stamps and the watch: what was made before them is seen here, what after
            # moves the stamps and is an event of the watch
            stray = gitops.untracked_entries(path, prefix=prefix)
            if stray:
                raise gitops.GitError(f"something wrote into {path} as it was made: {stray[:3]}")
            if watched:  # a file changed before the watch began is put back (an event then)
                gitops.make_pristine(path, clean=False, prefix=prefix)
            record = {"state": "ready", "commit": commit, "createdAt": time.time()}
            record["bytes"] = _du(path)
            atomic_write(self._record(name), json.dumps(record).encode())
        except BaseException:
            self._remove(path)
            raise
        finally:
            self._making = None

    # -- taking ----------------------------------------------------------------------------
    def take(self, dest: Path, *, branch: str, commit: str) -> bool:
        """Make ``dest`` a session's worktree from an idle one: on a new ``branch`` at
        ``commit``, pristine. False when none was ready (nothing was changed then)."""
        while True:
            src = self._claim()
            if src is None:
                return False
            _, untouched = self._checked(src)  # before the move, which changes its root's ctime
            try:
                with self._git_lock:
                    gitops.move_worktree(self.repo_root, src, dest)
            except gitops.GitError as exc:
                log.warning("pool: %s could not be taken: %s", src, exc)
                self._remove(src)
                continue
            finally:
                with self._lock:
                    self._early.discard(src.name)
            break
        try:
            gitops.switch_worktree(dest, branch=branch, commit=commit, clean=not untouched)
        except gitops.GitError as exc:  # never half a session's worktree: make a fresh one
            log.warning("pool: %s could not be moved to %s: %s", dest, commit, exc)
            with self._git_lock:
                gitops.remove_worktree_and_branch(self.repo_root, dest, branch)
            return False
        return True

    def _sound(self, path: Path) -> bool:
        """A pooled worktree git knows, on no branch, its ``.git`` the link git wrote."""
        try:
            gitops.check_worktree_link(self.repo_root, path)
            entries = gitops.worktrees(self.repo_root)
        except gitops.GitError:
            return False
        return any(
            gitops._same_path(e["worktree"], path) and "detached" in e and "branch" not in e
            for e in entries
        )

    # -- a worktree readied beside the snapshot ------------------------------------------
    def early(self, *, use_pool: bool) -> Early:
        """Start readying a worktree for one session, now, at normal priority, in a thread, while
        its snapshot is taken: an idle pooled one (``use_pool`` and one is ready) is claimed and
        made pristine (``git clean -ffdx``, ``git reset --hard``), else the repository's HEAD is
        checked out into a new one (cold: the pool is off or empty). Then :meth:`take_early`
        moves it to the snapshot writing only the files that differ. Either is in the pool's
        folder without a record meanwhile: no other session can take it, and what a crash leaves
        of it is removed at the next start like anything half-made here."""
        early = Early(self.folder / (PREFIX + secrets.token_hex(6)))
        with self._lock:
            self._early.add(early.path.name)
        early.thread = threading.Thread(
            target=self._ready_early, args=(early, use_pool), name="handoff-early", daemon=True
        )
        early.thread.start()
        return early

    def _claim(self) -> Path | None:
        """An idle pooled worktree, out of the pool from now on (its record deleted; its name in
        ``_early`` until the caller is done with it); None when none is ready."""
        with self._lock:
            while True:
                ready = self.ready()
                if not ready:
                    return None
                name = ready[0][0]
                try:
                    self._record(name).unlink()  # out of the pool, whatever happens next
                except FileNotFoundError:
                    continue
                src = self.folder / name
                if self._sound(src):
                    self._early.add(name)
                    return src
                self._remove(src)

    def _ready_early(self, early: Early, use_pool: bool) -> None:
        early.started = time.monotonic()
        try:
            src = self._claim() if use_pool else None
            if src is not None:
                with self._lock:
                    self._early.discard(early.path.name)
                early.path, early.pooled = src, True
                early.quiet, untouched = self._checked(src)
                if not early.quiet:
                    early.go.wait(GO_WAIT_S)
                    gitops.make_pristine(src, clean=not untouched)
            else:
                with self._git_lock:
                    gitops.add_detached_worktree(self.repo_root, early.path, "HEAD")
                gitops.trust_fresh_checkout(early.path)  # nothing writes in it before the take
            early.head = gitops.resolve(early.path, "HEAD")
        except (gitops.GitError, OSError) as exc:
            early.error = exc
        early.done = time.monotonic()
        if not early.aimed.wait(AIM_WAIT_S):
            early.error = early.error or gitops.GitError("no session took it in time")
        if early.error is not None or early.target is None:
            if early.error is not None:
                log.warning("a worktree could not be readied early: %s", early.error)
            self._remove(early.path)
            return
        dest, branch, commit = early.target
        t0 = time.monotonic()
        try:
            with self._git_lock:
                gitops.move_worktree(self.repo_root, early.path, dest)
        except gitops.GitError as exc:
            log.warning("%s could not be moved to %s: %s", early.path, dest, exc)
            self._remove(early.path)
            return
        try:
            gitops.branch_pristine_worktree(dest, branch=branch, commit=commit, head=early.head)
        except gitops.GitError as exc:
            log.warning("%s could not be moved to %s: %s", dest, commit, exc)
            with self._git_lock:
                gitops.remove_worktree_and_branch(self.repo_root, dest, branch)
            return
        early.moved_s = time.monotonic() - t0
        early.taken = True

    def aim(self, early: Early, dest: Path, *, branch: str, commit: str) -> None:
        """Have an :meth:`early` worktree become ``dest``, a session's worktree on a new
        ``branch`` at ``commit``, as soon as it is ready (in its own thread: the snapshot's last
        reads and the brief are written meanwhile); :meth:`take_early` waits for it."""
        if not early.aimed.is_set():
            early.target = (dest, branch, commit)
            early.aimed.set()

    def take_early(self, early: Early, dest: Path, *, branch: str, commit: str) -> bool:
        """Make ``dest`` a session's worktree from its :meth:`early` one (waited for): on a new
        ``branch`` at ``commit``. False when it could not be made (nothing is left of it)."""
        self.aim(early, dest, branch=branch, commit=commit)
        t0 = time.monotonic()
        early.thread.join()
        try:
            if not early.taken or early.target != (dest, branch, commit):
                return False
            log.info(
                "%s: %s in %.3f s (waited for it %.3f s), moved to %s in %.3f s",
                dest.name,
                (
                    "pooled worktree, nothing written in it,"
                    if early.quiet
                    else "pooled worktree made pristine"
                    if early.pooled
                    else "checked out"
                ),
                early.done - early.started,
                time.monotonic() - t0,
                commit[:12],
                early.moved_s,
            )
            return True
        finally:
            with self._lock:
                self._early.discard(early.path.name)

    def drop(self, early: Early) -> None:
        """Remove an :meth:`early` worktree no session took (its snapshot failed, it was
        cancelled): never back into the pool; one already moved into a session's place goes
        with its branch."""
        early.aimed.set()  # not aimed before: it is removed where it is
        early.thread.join()
        if early.taken and early.target is not None:
            dest, branch, _ = early.target
            with self._git_lock, contextlib.suppress(gitops.GitError, OSError):
                gitops.remove_worktree_and_branch(self.repo_root, dest, branch)
        with self._lock:
            self._early.discard(early.path.name)

    # -- removing --------------------------------------------------------------------------
    def _remove(self, path: Path) -> None:
        with self._git_lock:
            with contextlib.suppress(gitops.GitError, OSError):
                gitops._remove_worktree(self.repo_root, path)
            if path.exists() and (not (path / ".git").exists() or (path / ".git").is_file()):
                shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self._record(path.name).unlink()
        self._stamps(path.name).unlink(missing_ok=True)
        self._watch.forget(path.name)

    def trim(self, keep: int = 0) -> int:
        """Remove idle worktrees beyond ``keep`` (newest first); how many were removed."""
        removed = 0
        with self._lock:
            for name, _ in self.ready()[keep:][::-1] if keep else self.ready():
                with contextlib.suppress(FileNotFoundError):
                    self._record(name).unlink()
                    self._remove(self.folder / name)
                    removed += 1
        return removed

    def recover(self) -> None:
        """At start: remove what is in the pool folder without a ``ready`` record (a crash left
        it half-made) and records without their folder."""
        if not self.folder.is_dir():
            return
        ready = {name for name, _ in self.ready()}
        with self._lock:
            ready |= self._early  # in use by a session starting now
        for child in self.folder.iterdir():
            if child.suffix in (".json", ".dirs"):
                if child.stem not in ready or not (self.folder / child.stem).is_dir():
                    child.unlink(missing_ok=True)
            elif child.is_dir() and child.name.startswith(PREFIX) and child.name not in ready:
                self._remove(child)

    def clear(self) -> int:
        """``handoff gc``: remove every idle worktree (made again at the next delegation)."""
        self._stop.set()
        if self._filler is not None:
            self._filler.join(timeout=30)
        n = self.trim(0)
        self.recover()
        return n

    def stop(self, timeout: float = 5.0) -> None:
        """Stop making worktrees (the daemon stops); what was half-made goes at the next start.
        The idle ones are no longer watched: a daemon that starts again checks them file by
        file."""
        self._stop.set()
        if self._filler is not None:
            self._filler.join(timeout=timeout)
        self._watch.close()


# -- ready to run ---------------------------------------------------------------------------


def _matches(entry: str, glob: str) -> bool:
    """gitignore-like: a glob without a slash matches a name at any depth; a trailing slash
    matches only a folder."""
    is_dir = entry.endswith("/")
    folder_only = glob.endswith("/")
    g = glob.strip("/")
    if folder_only and not is_dir:
        return False
    e = entry.rstrip("/")
    if "/" not in g:
        return fnmatch.fnmatchcase(e.rsplit("/", 1)[-1], g)
    return fnmatch.fnmatchcase(e, g.removeprefix("**/")) or fnmatch.fnmatchcase(e, g)


def copy_includes(repo_root: Path, worktree: Path, globs: Sequence[str]) -> list[str]:
    """``worktree.include``: copy the developer's ignored files (and folders) that ``globs``
    match into ``worktree``, with ``cp --reflink=auto`` (copy-on-write where the file system
    can, else a plain copy; never a hard link to, or a symbolic link into, the developer's
    tree: a copied symlink that resolves into it is removed). Returns what was copied."""
    if not globs:
        return []
    repo_root, worktree = Path(repo_root), Path(worktree)
    picked = [e for e in gitops.ignored_entries(repo_root) if any(_matches(e, g) for g in globs)]
    copied = []
    for entry in picked:
        rel = gitops._check_rel(entry.rstrip("/"))
        src, dst = repo_root / rel, worktree / rel
        if src.is_symlink() or not (src.is_file() or src.is_dir()):
            continue  # a link is not copied: the agent could write through it
        dst.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["cp", "-R", "--preserve=mode,timestamps", "--reflink=auto", "-T", str(src), str(dst)],
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            msg = os.fsdecode(proc.stderr).strip()
            raise OSError(f"worktree.include: could not copy {rel}: {msg}")
        if dst.is_dir():
            _drop_links_into(dst, repo_root, worktree)
        copied.append(entry)
    return copied


def _drop_links_into(folder: Path, repo_root: Path, worktree: Path) -> None:
    """Remove the symlinks under ``folder`` that resolve into the developer's tree (outside
    the worktree)."""
    top, wt = os.path.realpath(repo_root), os.path.realpath(worktree)
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                continue
            real = os.path.realpath(p)
            inside_wt = real == wt or real.startswith(wt + "/")
            if not inside_wt and (real == top or real.startswith(top + "/")):
                os.unlink(p)


class SetupError(Exception):
    """``worktree.setup`` failed; the message is the session's error, ``output`` what it said."""

    def __init__(self, message: str, output: str = "", code: int | None = None) -> None:
        super().__init__(message)
        self.output, self.code = output, code


def run_setup(
    command: str,
    worktree: Path,
    *,
    policy: str,
    pass_env: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout_s: float = 900.0,
) -> tuple[int, str]:
    """Run ``worktree.setup`` in ``worktree`` in the sandbox (``commandPolicy = "allow"``:
    unconfined); (exit code, output). Raises SetupError when it cannot run or fails."""
    from . import sandbox
    from .processes import background

    kind = "none" if policy == "allow" else sandbox.available()
    if kind is None:
        raise SetupError(
            "worktree.setup was not run: no sandbox can be had on this machine (install "
            'bubblewrap, or set commandPolicy = "allow" in your own settings)'
        )
    with sandbox.prepare(
        command, root=worktree, kind=kind, pass_env=pass_env, base_env=env
    ) as launch:
        proc = subprocess.Popen(
            launch.argv,
            cwd=worktree,
            env=launch.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        background(proc.pid)
        try:
            out, _ = proc.communicate(timeout=timeout_s)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            launch.stop(proc)
            out, _ = proc.communicate()
            code = None
        finally:
            launch.stop(proc)
    text = out.decode("utf-8", "replace")
    if code is None:
        raise SetupError(f"worktree.setup `{command}` timed out after {timeout_s:g} s", text)
    if code != 0:
        last = next((ln for ln in reversed(text.splitlines()) if ln.strip()), "")
        raise SetupError(
            f"worktree.setup `{command}` failed (exit code {code})"
            + (f": {last.strip()[:300]}" if last else "")
            + "; the agent was not started (its output is in the transcript)",
            text,
            code,
        )
    return code, text
