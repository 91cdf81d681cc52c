"""Whether anything was written in a folder tree since it was watched: one inotify instance for
many trees (the pool's idle worktrees), each known by a key.

A tree is watched folder by folder (inotify watches a folder's own entries, not below it), so
every file made, written, removed, renamed or changed in its mode or times, and every folder
made in it, is an event of the folder that holds it. Reading a file is not one; nor is a write
through a shared memory mapping, or through a hard link from outside the tree (the event is the
other folder's): the trees watched here are the pool's own, made by git in Handoff's state
folder, and no session's or developer's file links into them. A tree is *quiet* while none of
its folders has had an event since :meth:`Watch.add`; anything this cannot vouch for (inotify
missing, the watch limit reached, the kernel's queue overflowed, a key never added or since
forgotten) is not quiet, and the caller looks at the files instead.

Watches are a per-user budget the developer's editor needs too (``fs.inotify.max_user_watches``;
VS Code warns when it runs out): every :class:`Watch` of this process together takes at most
:data:`SHARE` of it, and a tree that would take more is not watched.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

SHARE = 1 / 16  # of fs.inotify.max_user_watches, for all of this process's watches
_MAX_WATCHES = "/proc/sys/fs/inotify/max_user_watches"
_taken = 0  # watches this process holds, all Watch objects together
_budget_lock = threading.Lock()


def _budget() -> int:
    try:
        with open(_MAX_WATCHES, encoding="ascii") as f:
            return int(int(f.read().strip()) * SHARE)
    except (OSError, ValueError):
        return 0


try:
    import inotify_simple
except ImportError:  # not Linux: nothing is ever quiet
    inotify_simple = None


def _mask() -> int:
    f = inotify_simple.flags
    return int(
        f.MODIFY
        | f.ATTRIB
        | f.CLOSE_WRITE
        | f.MOVED_FROM
        | f.MOVED_TO
        | f.CREATE
        | f.DELETE
        | f.DELETE_SELF
        | f.MOVE_SELF
        | f.ONLYDIR
        | f.DONT_FOLLOW
    )


class Watch:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: Any = None
        self._keys: dict[str, list[int]] = {}  # key -> its folders' watch descriptors
        self._of: dict[int, str] = {}  # watch descriptor -> key
        self._dirty: set[str] = set()

    def add(self, key: str, folders: Iterable[str]) -> bool:
        """Watch ``folders`` (every folder of one tree) as ``key``; False when they cannot all
        be watched (then none is)."""
        if inotify_simple is None:
            return False
        folders = list(folders)
        global _taken
        with _budget_lock:
            if _taken + len(folders) > _budget():
                log.info(
                    "watch of %s: %d folders would pass Handoff's share of the user's inotify "
                    "watches; it is checked file by file instead",
                    key,
                    len(folders),
                )
                return False
            _taken += len(folders)
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = inotify_simple.INotify(nonblocking=True)
                mask = _mask()
                wds = self._keys.setdefault(key, [])
                self._dirty.discard(key)
                for folder in folders:
                    wd = self._fd.add_watch(folder, mask)
                    wds.append(wd)
                    self._of[wd] = key
            except OSError as exc:  # ENOSPC: fs.inotify.max_user_watches reached
                log.info("watch of %s: %s; it is checked file by file instead", key, exc)
                added = len(self._keys.get(key, []))
                self._forget(key)  # gives back what was added
                _give_back(len(folders) - added)
                return False
        return True

    def quiet(self, key: str) -> bool:
        """Whether nothing was written in ``key``'s tree since it was added."""
        with self._lock:
            self._drain()
            return key in self._keys and key not in self._dirty

    def forget(self, key: str) -> None:
        with self._lock:
            self._drain()
            self._forget(key)

    def close(self) -> None:
        """Stop watching every tree (their watches go back to the budget)."""
        with self._lock:
            for key in list(self._keys):
                self._forget(key)
            if self._fd is not None:
                self._fd.close()
                self._fd = None

    def _forget(self, key: str) -> None:
        wds = self._keys.pop(key, [])
        _give_back(len(wds))
        for wd in wds:
            self._of.pop(wd, None)
            try:
                self._fd.rm_watch(wd)
            except OSError:  # its folder is gone already (the watch went with it)
                pass
        self._dirty.discard(key)

    def _drain(self) -> None:
        if self._fd is None:
            return
        overflow = int(inotify_simple.flags.Q_OVERFLOW)
        while True:
            try:
                events = self._fd.read(timeout=0)
            except BlockingIOError:
                events = []
            if not events:
                return
            for event in events:
                if event.mask & overflow:  # events were lost: no tree can be vouched for
                    self._dirty.update(self._keys)
                key = self._of.get(event.wd)
                if key is not None:
                    self._dirty.add(key)


def _give_back(n: int) -> None:
    global _taken
    with _budget_lock:
        _taken = max(0, _taken - n)
