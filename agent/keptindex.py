"""The index a snapshot starts from: a split copy of the developer's index, kept between snapshots.

A snapshot (``gitops.take_snapshot``) works on a copy of the developer's index, and three of its
gits write that copy whole: ``add -A``, the overlays' ``update-index`` and ``write-tree``. On
20,000 files that is a 1.7 MB file hashed and written three times, a third of the snapshot
(bench/RESULTS.md). A split index (git's ``core.splitIndex``) is a small file of the entries
that differ from a shared index beside it, and a git writing it writes only those: a snapshot
started from a split copy writes a few KB.

One ``KeptIndex`` a worktree (its session manager's). Its file is in Handoff's state folder
(``Store.index_path``); the shared index it points to is where git keeps them, the developer's
git folder (``sharedindex.<hash>``), and is Handoff's: made in the background (idle priority)
when the developer's index changes (git replaces that file whole on every write, so its inode,
size and mtime tell), deleted once it is replaced and no snapshot reads it any more, and when
the daemon stops (``close``); the ones a daemon that did not stop left are deleted by the next
(their names are kept in ``<index>.shared``). Until a split copy of the developer's index as it
is now is ready, a snapshot starts from the developer's index as before, and so it does for
good when the developer's own index is split (that shared index is theirs) or git cannot split
(a read-only git folder). The kept copy holds exactly the developer's entries, never what a
snapshot added, so a snapshot is the same commit either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from . import gitops
from .pool import idle_prefix

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int]  # inode, size, mtime (ns) of the developer's index file


def _stamp(st: os.stat_result) -> Stamp:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class KeptIndex:
    """The split copy of the developer's index of the worktree ``repo_root``, at ``path``."""

    def __init__(self, repo_root: Path, path: Path):
        self.repo_root = Path(repo_root)
        self.path = Path(path)
        self._note = self.path.with_name(self.path.name + ".shared")
        self._lock = threading.Lock()
        self._stamp: Stamp | None = None  # of the developer's index the kept file copies
        self._tried: Stamp | None = None  # the last one a split was tried of
        self._shared: Path | None = None  # the shared index the kept file points to
        self._owned: set[Path] = set()  # shared indexes Handoff made and has not deleted
        self._readers: dict[Path, int] = {}  # snapshots reading each shared index
        self._worker: threading.Thread | None = None
        self._closed = False
        self._adopted = False

    def refresh_soon(self) -> None:
        """Make the split copy in the background if the developer's index is not the one the
        kept file copies (and no split of that one was tried)."""
        with self._lock:
            self._current()

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait for the background split (if one runs); whether a copy of the developer's index
        as it is now is ready."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        with self._lock:
            return self._current() is not None

    @contextlib.contextmanager
    def use(self) -> Iterator[Path | None]:
        """A copy of the kept index for one snapshot, its shared index kept while inside; None
        while no split copy of the developer's index as it is now is ready (then one is made in
        the background): the snapshot starts from the developer's index."""
        with self._lock:
            kept = self._current()
            shared = self._shared if kept is not None else None
            if shared is not None:
                self._readers[shared] = self._readers.get(shared, 0) + 1
        tmpdir = None
        try:
            start = None
            if kept is not None:
                tmpdir = Path(tempfile.mkdtemp(prefix="handoff-kept-"))
                start = tmpdir / "index"
                try:
                    shutil.copy2(kept, start)  # keeps mtime: racy-git detection stays correct
                except OSError as exc:  # deleted by hand: made again at the next use
                    log.info("kept index %s: %s", kept, exc)
                    start = None
            yield start
        finally:
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)
            if shared is not None:
                with self._lock:
                    left = self._readers.pop(shared, 0) - 1  # none when close swept it
                    if left > 0:
                        self._readers[shared] = left
                    self._sweep()

    def close(self) -> None:
        """Delete the kept index and the shared indexes Handoff made (the daemon stops; a
        snapshot reading one then starts over from the developer's index)."""
        worker = self._worker
        with self._lock:
            self._closed = True
            self._stamp = self._shared = None
        if worker is not None:
            worker.join(timeout=10)
        with self._lock:
            self.path.unlink(missing_ok=True)
            self._sweep(force=True)
            if not self._owned:
                self._note.unlink(missing_ok=True)

    # --- lock held ------------------------------------------------------------------------

    def _current(self) -> Path | None:
        """The kept file when it copies the developer's index as it is now, else None (and a
        split of that index started in the background, unless tried already)."""
        if self._closed:
            return None
        try:
            stamp = _stamp(os.stat(gitops.index_path(self.repo_root)))
        except (OSError, gitops.GitError):
            return None  # no index yet, or no repository any more
        if (
            stamp == self._stamp
            and self._shared is not None
            and self._shared.is_file()
            and self.path.is_file()
        ):
            return self.path
        if stamp != self._tried or self._stamp == stamp:  # changed, or its shared index went
            self._tried = stamp
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._refresh, name="handoff-kept-index", daemon=True
                )
                self._worker.start()
        return None

    def _sweep(self, force: bool = False) -> None:
        """Delete the shared indexes Handoff made that the kept file does not point to and no
        snapshot reads (every one, with ``force``)."""
        gone = [
            shared
            for shared in sorted(self._owned)
            if force or (shared != self._shared and not self._readers.get(shared, 0))
        ]
        if not gone:
            return
        try:
            theirs = gitops.shared_index_path(self.repo_root)
        except gitops.GitError:
            theirs = None
            gone = []  # no repository any more: nothing of it to delete
        for shared in gone:
            self._owned.discard(shared)
            self._readers.pop(shared, None)
            if theirs is not None and os.path.abspath(theirs) == str(shared):
                continue  # the developer's index was split since, onto this one: theirs now
            shared.unlink(missing_ok=True)
        self._write_note()

    def _write_note(self) -> None:
        try:
            if self._owned:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._note.write_text("".join(f"{p}\n" for p in sorted(self._owned)))
            else:
                self._note.unlink(missing_ok=True)
        except OSError as exc:
            log.info("kept index note %s: %s", self._note, exc)

    # --- the background worker ------------------------------------------------------------

    def _refresh(self) -> None:
        """Split a copy of the developer's index and make it the kept file (one that changed
        meanwhile is split again when a snapshot next asks)."""
        with self._lock:
            if self._closed:
                return
            if not self._adopted:
                self._adopt_leftovers()
        try:
            made = self._split()
        except (OSError, gitops.GitError) as exc:
            log.info("%s: no kept index (%s); snapshots start from the index", self.repo_root, exc)
            return
        if made is None:
            return
        stamp, new, shared, owned = made
        with self._lock:
            if owned:
                self._owned.add(shared)
            self._write_note()  # before the kept file points to it
            if self._closed:
                new.unlink(missing_ok=True)
                self._sweep(force=True)
                return
            os.replace(new, self.path)
            self._stamp, self._shared = stamp, shared
            self._sweep()

    def _adopt_leftovers(self) -> None:
        """The shared indexes a daemon that did not stop named in the note are this one's to
        delete (once a process)."""
        self._adopted = True
        try:
            lines = self._note.read_text("utf-8").splitlines()
        except OSError:
            return
        for line in lines:
            name = Path(line).name
            if line.startswith("/") and name.startswith("sharedindex.") and len(name) in (52, 76):
                self._owned.add(Path(line))  # git's names: 40 or 64 hex digits
        self._sweep()

    def _split(self) -> tuple[Stamp, Path, Path, bool] | None:
        """A split copy of the developer's index, beside the kept file: (the stamp of what it
        copies, the copy, its shared index, made by this split); None when theirs is split."""
        if gitops.shared_index_path(self.repo_root) is not None:
            log.info("%s: the index is split already; snapshots start from it", self.repo_root)
            return None
        index = gitops.index_path(self.repo_root)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = self.path.with_name(self.path.name + ".new")
        with open(index, "rb") as f:  # the stamp of exactly the bytes copied
            st = os.fstat(f.fileno())
            with open(new, "wb") as out:
                shutil.copyfileobj(f, out)
        os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
        before = set(index.parent.glob("sharedindex.*"))
        try:
            gitops.split_index(self.repo_root, new, prefix=idle_prefix())
            shared = gitops.shared_index_path(self.repo_root, new)
        except BaseException:
            new.unlink(missing_ok=True)
            raise
        if shared is None:
            new.unlink(missing_ok=True)
            return None
        shared = Path(os.path.abspath(shared))
        return _stamp(st), new, shared, shared not in before
