"""A line diff in about linear time: patience diff with a histogram-style fallback.

``difflib.SequenceMatcher(autojunk=False)`` is quadratic in repeated lines (a big source file
has many: blank lines, ``}``, ``return x``); this is not. Each range is trimmed of its common
prefix and suffix, then split at anchors: lines that occur equally often (at most
``MAX_CHAIN`` times) in both sides, paired in order, the longest increasing chain of them
(patience sorting, lines unique on both sides first). What has no anchor left is one
replacement, or difflib's diff when the range is small. Pure Python, no git.
"""

from __future__ import annotations

import bisect
import difflib
import itertools
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

MAX_CHAIN = 64  # lines occurring more often than this in a range are never anchors
SMALL = 40_000  # ranges with len(a) * len(b) up to this go to difflib (exact, fast enough)

Opcode = tuple[str, int, int, int, int]


def _intern(a: Sequence[Hashable], b: Sequence[Hashable]) -> tuple[list[int], list[int]]:
    ids: defaultdict[Hashable, int] = defaultdict(itertools.count().__next__)
    return [ids[x] for x in a], [ids[x] for x in b]


def _lis(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The longest chain of ``pairs`` (sorted by their first item) increasing in both items."""
    second = [j for _, j in pairs]
    if second == sorted(second):  # files that differ in a few places: all of them, found in C
        return pairs
    tails: list[int] = []  # tails[k]: smallest second item ending a chain of length k + 1
    tail_at: list[int] = []  # index into pairs of that tail
    back = [-1] * len(pairs)
    for n, (_, j) in enumerate(pairs):
        k = bisect.bisect_left(tails, j)
        if k == len(tails):
            tails.append(j)
            tail_at.append(n)
        else:
            tails[k] = j
            tail_at[k] = n
        back[n] = tail_at[k - 1] if k else -1
    chain = []
    n = tail_at[-1] if tail_at else -1
    while n >= 0:
        chain.append(pairs[n])
        n = back[n]
    chain.reverse()
    return chain


def _anchors(
    a: list[int], b: list[int], alo: int, ahi: int, blo: int, bhi: int
) -> list[tuple[int, int]]:
    """Matching line pairs to split ``a[alo:ahi]`` / ``b[blo:bhi]`` at, in order."""
    count_a = Counter(a[alo:ahi])
    count_b = Counter(b[blo:bhi])
    unique = {x for x, n in count_b.items() if n == 1 and count_a.get(x) == 1}
    if unique:  # patience: lines unique on both sides
        where = {x: j for j, x in enumerate(b[blo:bhi], blo) if x in unique}
        chain = _lis([(i, where[x]) for i, x in enumerate(a[alo:ahi], alo) if x in unique])
        if chain:
            return chain
    rare = {x for x, n in count_b.items() if n <= MAX_CHAIN and count_a.get(x) == n}
    if not rare:  # histogram-style: lines as rare on both sides, k-th paired with k-th
        return []
    seen: dict[int, list[int]] = {}
    for j, x in enumerate(b[blo:bhi], blo):
        if x in rare:
            seen.setdefault(x, []).append(j)
    nth: Counter[int] = Counter()
    pairs = []
    for i, x in enumerate(a[alo:ahi], alo):
        if x in rare:
            pairs.append((i, seen[x][nth[x]]))
            nth[x] += 1
    return _lis(pairs)


def matching_blocks(a: Sequence[Hashable], b: Sequence[Hashable]) -> list[tuple[int, int, int]]:
    """``(i, j, n)`` with ``a[i:i+n] == b[j:j+n]``, increasing, non-adjacent, as difflib gives
    them (without its final dummy block)."""
    ia, ib = _intern(a, b)
    found: list[tuple[int, int, int]] = []
    stack = [(0, len(ia), 0, len(ib))]
    while stack:
        alo, ahi, blo, bhi = stack.pop()
        n = 0
        while alo + n < ahi and blo + n < bhi and ia[alo + n] == ib[blo + n]:
            n += 1
        if n:
            found.append((alo, blo, n))
            alo, blo = alo + n, blo + n
        m = 0
        while alo < ahi - m and blo < bhi - m and ia[ahi - 1 - m] == ib[bhi - 1 - m]:
            m += 1
        if m:
            found.append((ahi - m, bhi - m, m))
            ahi, bhi = ahi - m, bhi - m
        if alo == ahi or blo == bhi:
            continue
        if (ahi - alo) * (bhi - blo) <= SMALL:
            sm = difflib.SequenceMatcher(None, ia[alo:ahi], ib[blo:bhi], autojunk=False)
            found += [(alo + i, blo + j, k) for i, j, k in sm.get_matching_blocks() if k]
            continue
        chain = _anchors(ia, ib, alo, ahi, blo, bhi)
        if not chain:
            continue  # nothing in common worth finding: one replacement
        pi, pj = alo, blo
        for (i, j), (ni, nj) in zip(chain, [*chain[1:], (ahi, bhi)], strict=True):
            back = 0  # grow each anchor over the equal lines around it, up to its neighbours
            while i - back > pi and j - back > pj and ia[i - back - 1] == ib[j - back - 1]:
                back += 1
            ahead = 1
            while i + ahead < ni and j + ahead < nj and ia[i + ahead] == ib[j + ahead]:
                ahead += 1
            if pi < i - back or pj < j - back:
                stack.append((pi, i - back, pj, j - back))
            found.append((i - back, j - back, back + ahead))
            pi, pj = i + ahead, j + ahead
        if pi < ahi or pj < bhi:
            stack.append((pi, ahi, pj, bhi))
    found.sort()
    merged: list[tuple[int, int, int]] = []
    for i, j, k in found:
        if merged and merged[-1][0] + merged[-1][2] == i and merged[-1][1] + merged[-1][2] == j:
            pi, pj, pk = merged[-1]
            merged[-1] = (pi, pj, pk + k)
        else:
            merged.append((i, j, k))
    return merged


def opcodes(a: Sequence[Hashable], b: Sequence[Hashable]) -> list[Opcode]:
    """What turns ``a`` into ``b``, as ``difflib.SequenceMatcher.get_opcodes()`` says it."""
    ops: list[Opcode] = []
    i = j = 0
    for ai, bj, n in [*matching_blocks(a, b), (len(a), len(b), 0)]:
        tag = "replace" if i < ai and j < bj else "delete" if i < ai else "insert" if j < bj else ""
        if tag:
            ops.append((tag, i, ai, j, bj))
        if n:
            ops.append(("equal", ai, ai + n, bj, bj + n))
        i, j = ai + n, bj + n
    return ops
