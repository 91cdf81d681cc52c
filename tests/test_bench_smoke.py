"""The benchmark suite's quick mode runs and produces numbers (timings are not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_produces_every_number(tmp_path: Path):
    out = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ERROR" not in proc.stdout, proc.stdout
    data = json.loads(out.read_text())
    assert data, "no results"
    for name in ("startup", "latency", "handoff", "apply", "scale", "bigfile"):
        assert name in json.dumps(data), name
