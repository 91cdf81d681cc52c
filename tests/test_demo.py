"""The README's first command (`make demo`) runs the main job end to end and says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_end_to_end():
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], env=env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    assert "offline scripted model" in out  # it says plainly what it is
    for shown in ("Handoff: 1 running", "Handoff: 1 ready", "Handoff: 1 applied",
                  "Delegate TODO to background agent", "workspace/applyEdit",
                  "+        return 0.0", "done: the result came back as an edit"):
        assert shown in out, shown
