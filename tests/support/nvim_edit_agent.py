"""A deterministic command agent for the Neovim end-to-end tests.

Run by the server with cwd = the session's worktree (docs/DESIGN.md "Agents", command). What it does
depends on the task (``HANDOFF_TASK``, the instruction):

- contains "slow": waits (up to 120 s) so the test can cancel it;
- contains "too" (a follow-up): marks ``sub`` with ``# checked too``;
- anything else: waits a little, so the editor sees the running state, then marks ``add`` with
  ``# checked``.

With ``NVIM_TEST_BRIEF_COPY`` set, the task brief (``HANDOFF_TASK_FILE``) is copied there.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def replace(path: Path, old: str, new: str) -> bool:
    text = path.read_text()
    if old not in text:
        print(f"{old!r} not found in {path}", file=sys.stderr)
        return False
    path.write_text(text.replace(old, new, 1))
    return True


def main() -> int:
    task = os.environ.get("HANDOFF_TASK", "")
    print(f"task: {task!r} file: {os.environ.get('HANDOFF_FILE')} "
          f"range: {os.environ.get('HANDOFF_RANGE')}", file=sys.stderr)  # fmt: skip
    path = Path(os.environ.get("HANDOFF_FILE") or "app.py")
    brief, copy = os.environ.get("HANDOFF_TASK_FILE"), os.environ.get("NVIM_TEST_BRIEF_COPY")
    if brief and copy and "too" not in task:  # keep the first brief for the test to read
        Path(copy).write_text(Path(brief).read_text())
    if "slow" in task:
        time.sleep(120)
        return 1
    time.sleep(float(os.environ.get("NVIM_TEST_AGENT_DELAY", "1.5")))
    if "too" in task:
        if not replace(path, "return a - b\n", "return a - b  # checked too\n"):
            return 1
        print("Added a comment to sub()")
        return 0
    if not replace(path, "return a + b\n", "return a + b  # checked\n"):
        return 1
    print("editing app.py")
    print("Added a comment to add()")
    return 0


if __name__ == "__main__":
    sys.exit(main())
