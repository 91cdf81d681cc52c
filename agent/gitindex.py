"""Git's index file (version 2), read only as far as a checkout split into parts needs it.

A checkout in parts (``gitops``' populate): the index of the tree is written once by git
(``read-tree``, every entry, no stat data), copied once per part, and each part's ``git
checkout-index`` writes its own contiguous range of the entries into the worktree and their stat
data into its own copy. Every copy keeps the same entries in the same order and each entry's size
depends only on its path, so the copies have one layout: the index of the whole checkout is the
header, each part's own range of entries, then the extensions (the cache tree: paths and object
ids only, true of every copy), and a new checksum.

Nothing here runs git; what does not look like an index git 2.x writes for a plain tree (another
version, extended flags, a length that does not add up) is refused with ``None`` / ``ValueError``
and the caller lets git check the tree out itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Iterator

_STAT = 40  # ctime, mtime (seconds, nanoseconds), dev, ino, mode, uid, gid, size: 4 bytes each
_EXTENDED = 0x4000  # an entry flag of version 3 (skip-worktree, intent-to-add)
HASHES = {20: "sha1", 32: "sha256"}


@dataclasses.dataclass
class Part:
    start: int  # byte offset of its first entry
    end: int  # byte offset after its last entry
    lo: int  # number of its first entry
    hi: int  # number after its last entry
    first: bytes  # its first path ("" for an empty part)


@dataclasses.dataclass
class Plan:
    count: int  # entries
    size: int  # bytes of the whole file
    extensions: int  # byte offset where the extensions start (after the last entry)
    hash_size: int
    parts: list[Part]
    names: list[bytes]  # every entry's path, in index order

    def paths(self, k: int) -> bytes:
        """Part ``k``'s paths, each ending in NUL (``checkout-index -z --stdin``)."""
        part = self.parts[k]
        return b"".join(name + b"\0" for name in self.names[part.lo : part.hi])

    def folders(self) -> list[bytes]:
        """Every folder of the tree, each after the folders above it, in index order: made
        beforehand (git's own parallel checkout makes them before it hands files to its
        workers), no part's ``mkdir`` meets another's and no part waits on one."""
        seen: dict[bytes, None] = {}
        last = b""
        for name in self.names:
            folder = name.rpartition(b"/")[0]
            if folder == last or not folder:
                continue
            last = folder
            if folder not in seen:
                for up in reversed([folder, *parents(folder)]):
                    seen.setdefault(up, None)
        return list(seen)


def parents(path: bytes) -> Iterator[bytes]:
    """The folders above a repository path, nearest first (``a/b/c`` -> ``a/b``, ``a``)."""
    while b"/" in path:
        path = path.rpartition(b"/")[0]
        yield path


def _entry_size(hash_size: int, name_len: int) -> int:
    """An entry on disk: stat data, object id, 2 bytes of flags, the path, 1-8 NULs to a
    multiple of 8 (git's ``ondisk_ce_size``)."""
    return (_STAT + hash_size + 2 + name_len + 8) & ~7


def plan(data: bytes, parts: int, hash_size: int) -> Plan | None:
    """Split the entries of index ``data`` into ``parts`` contiguous ranges of (nearly) equal
    counts; None when ``data`` is not a version 2 index of plain entries this can split."""
    if hash_size not in HASHES or parts < 1 or len(data) < 12 + hash_size:
        return None
    signature, version, count = struct.unpack_from(">4sII", data)
    if signature != b"DIRC" or version != 2:
        return None
    flags_at = _STAT + hash_size
    name_at = flags_at + 2
    off, limit = 12, len(data) - hash_size
    names: list[bytes] = []
    offsets: list[int] = []
    find, unpack = data.find, struct.Struct(">H").unpack_from
    for _ in range(count):
        if off + name_at > limit or unpack(data, off + flags_at)[0] & _EXTENDED:
            return None
        nul = find(b"\0", off + name_at, limit)
        if nul < 0:
            return None
        names.append(data[off + name_at : nul])
        offsets.append(off)
        off += _entry_size(hash_size, nul - off - name_at)
    if off > limit:
        return None
    bounds = [count * k // parts for k in range(parts + 1)]
    at = [*offsets, off]
    return Plan(
        count=count,
        size=len(data),
        extensions=off,
        hash_size=hash_size,
        parts=[
            Part(
                start=at[bounds[k]],
                end=at[bounds[k + 1]],
                lo=bounds[k],
                hi=bounds[k + 1],
                first=names[bounds[k]] if bounds[k] < bounds[k + 1] else b"",
            )
            for k in range(parts)
        ],
        names=names,
    )


def splice(layout: Plan, written: list[bytes]) -> bytes:
    """The index of the whole checkout from each part's own copy, as its git wrote it (same
    order as ``layout.parts``). ValueError when a copy does not have the layout planned."""
    if len(written) != len(layout.parts):
        raise ValueError("one written index per part is needed")
    name_at = _STAT + layout.hash_size + 2
    out = bytearray(written[0][:12])
    for part, data in zip(layout.parts, written, strict=True):
        if len(data) != layout.size or data[:12] != out[:12]:
            raise ValueError("a part's index does not have the planned layout")
        if part.first and data[part.start + name_at : part.start + name_at + len(part.first)] != (
            part.first
        ):
            raise ValueError("a part's index does not have the planned layout")
        out += data[part.start : part.end]
    out += written[0][layout.extensions : layout.size - layout.hash_size]
    out += hashlib.new(HASHES[layout.hash_size], out).digest()
    return bytes(out)
