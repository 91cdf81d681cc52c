"""The ``handoff`` CLI as a user types it, for tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def handoff(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``handoff ARGS...`` in ``cwd`` (stdin empty), its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "handoff.agent.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
