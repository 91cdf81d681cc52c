"""The `handoff` CLI as a developer types it, in a folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def handoff(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``handoff ARGS`` in ``cwd`` (output captured as text; never raises on failure)."""
    return subprocess.run(
        [sys.executable, "-m", "handoff.agent.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
