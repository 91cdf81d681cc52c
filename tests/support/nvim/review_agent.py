"""The command agent of the Neovim review scenario (tests/support/nvim/review.lua).

First run: comments both results of app.py (two hunks). A follow-up (its task says what the
developer rejected, and why): the task goes to ``REVIEW_TASK_COPY`` and ``sub``'s result gets
another comment.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> int:
    task = os.environ.get("HANDOFF_TASK", "")
    path = Path("app.py")
    text = path.read_text()
    if "rejected" in task:
        Path(os.environ["REVIEW_TASK_COPY"]).write_text(task)
        text = text.replace("    return a - b\n", "    return a - b  # a minus b\n", 1)
        print("said it differently")
    else:
        text = text.replace("    return a + b\n", "    return a + b  # sum\n", 1)
        text = text.replace("    return a - b\n", "    return a - b  # difference\n", 1)
        print("commented both results")
    path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
