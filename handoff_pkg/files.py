"""Files as git checks them out: atomic replacement, the executable bit, symbolic links.

The one place a file is replaced atomically (temporary file, ``fsync``, ``os.replace``): the
state folder's records (:func:`atomic_write`), results written to disk, the built-in agent's
writes in its worktree.

Shared by ``handoff apply`` (agent/results.py) and the language server (server/apply.py); no git
here. Modes are git's: ``100644`` (a file), ``100755`` (an executable file), ``120000`` (a
symbolic link, whose content is its target).
"""

from __future__ import annotations

import itertools
import os
import posixpath
import stat
import threading
from pathlib import Path

REGULAR = "100644"
EXECUTABLE = "100755"
SYMLINK = "120000"
_count = itertools.count()


def disk_mode(path: Path) -> str | None:
    """The git mode of what is at ``path`` now (not following a link); None if nothing or
    something git does not store (a folder, a fifo)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISLNK(st.st_mode):
        return SYMLINK
    if stat.S_ISREG(st.st_mode):
        return EXECUTABLE if st.st_mode & stat.S_IXUSR else REGULAR
    return None


def read_link(path: Path) -> bytes:
    return os.fsencode(os.readlink(path))


def link_leaves(rel_path: str, target: bytes) -> bool:
    """Whether a link at ``rel_path`` (repository-relative) to ``target`` points outside the
    repository (absolute, or up through ``..``)."""
    text = os.fsdecode(target)
    if not text or text.startswith("/") or "\0" in text:
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel_path), text))
    return joined == ".." or joined.startswith("../") or joined.startswith("/")


def _umask() -> int:
    """The process umask, read without changing it (os.umask is not thread-safe to probe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def permissions(mode: str | None, existing: int | None) -> int:
    """Permission bits for a regular file that should have git ``mode`` (None: as it is), given
    the bits of the file it replaces (None: a new file), as git's checkout sets them."""
    base = existing if existing is not None else 0o666 & ~_umask()
    if mode == EXECUTABLE:
        return base | ((base & 0o444) >> 2)  # x wherever r
    if mode == REGULAR:
        return base & ~0o111
    return base


def _existing_bits(path: Path) -> int | None:
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


def temp_path(target: Path) -> Path:
    """A fresh name beside ``target`` for what it becomes (unique to this process, thread and
    call: concurrent writers of one file never share a temporary file)."""
    return target.with_name(
        f".{target.name[:200]}.handoff-{os.getpid()}-{threading.get_ident()}-{next(_count)}.tmp"
    )


def stage(
    target: Path,
    content: bytes,
    mode: str | None = None,
    *,
    bits: int | None = None,
    fsync: bool = True,
) -> Path:
    """Write what ``target`` should become beside it (a regular file with the right bits, or a
    symbolic link when ``mode`` is SYMLINK, ``content`` being its target), flushed to disk
    (``fsync=False``: left to the kernel, as git leaves its index); return that temporary path,
    for :func:`commit`. The bits are those of git ``mode`` applied
    to the file it replaces (``mode`` None: kept as they are), or ``bits`` when given. Never
    follows a link at the temporary name; the temporary file is gone when it raises OSError."""
    tmp = temp_path(target)
    if mode == SYMLINK:
        os.symlink(os.fsdecode(content), tmp)
        return tmp
    if bits is None:
        bits = permissions(mode, _existing_bits(target))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
            os.fchmod(f.fileno(), bits)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def commit(tmp: Path, target: Path) -> None:
    """Put a staged file in place (atomic: a reader sees the old or the new one)."""
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write(
    target: Path,
    content: bytes,
    mode: str | None = None,
    *,
    bits: int | None = None,
    fsync: bool = True,
) -> None:
    """Replace ``target`` atomically with ``content`` (a link when ``mode`` is SYMLINK): a
    temporary file beside it, flushed, then renamed over it (:func:`stage`, :func:`commit`)."""
    commit(stage(target, content, mode, bits=bits, fsync=fsync), target)


def atomic_write(path: Path, data: bytes) -> None:
    """Write a private file (0600) of Handoff's own state so a reader sees the old or the new
    content, never half; its folder is made when missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, data, bits=0o600)


def set_mode(target: Path, mode: str) -> None:
    """Give the regular file ``target`` the executable bit of git ``mode`` (or take it away).
    Raises OSError (FileNotFoundError when it is not there, or not a regular file)."""
    bits = _existing_bits(target)
    if bits is None:
        raise FileNotFoundError(2, "not a regular file, so its mode cannot be set", str(target))
    os.chmod(target, permissions(mode, bits))
