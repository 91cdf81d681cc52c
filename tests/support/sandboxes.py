"""Which sandboxes this machine can give ``run_command`` (tests run once per kind)."""

from __future__ import annotations

import shutil

from handoff.agent import sandbox


def kinds() -> list[str]:
    """``bubblewrap`` and / or ``landlock``, those that work here."""
    found = []
    bwrap = shutil.which("bwrap")
    if bwrap and sandbox._bwrap_works(bwrap):
        found.append("bubblewrap")
    if sandbox.landlock_abi() >= sandbox.MIN_LANDLOCK_ABI:
        found.append("landlock")
    return found
