"""The README's first command (`make demo`) runs the main job end to end and says so."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.support.paths import ROOT

LONGEST_SILENCE_S = 6.0  # the demo speaks at least every 2 s; this leaves room for a busy machine


def test_demo_runs_end_to_end(tmp_path: Path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    env["TMPDIR"] = str(tmpdir)  # where the demo makes its folders
    lines: list[tuple[float, str]] = []
    log = tmp_path / "stderr.txt"  # a file, not a pipe: the server's log must never block the demo
    with (
        log.open("w") as err,
        subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "demo.py")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:  # as they come, to time the silences
            lines.append((time.monotonic(), line))
    stderr = log.read_text()
    assert proc.wait(timeout=300) == 0, "".join(line for _, line in lines) + stderr[-3000:]
    out = "".join(line for _, line in lines)
    assert "offline scripted model" in out  # it says plainly what it is
    for shown in (
        "Handoff: 1 running",
        "Handoff: 1 ready",
        "Handoff: 1 applied",
        "Delegate TODO to background agent",
        "workspace/applyEdit",
        "progress | begin: builtin agent working",
        "progress | end: ready",
        "done: the result came back as an edit",
    ):
        assert shown in out, shown

    # the worktree is named, outside the sample repository, and gone after the apply
    worktree = re.search(r"the agent works in (\S+) \(branch (handoff/\S+)\)", out)
    assert worktree, out
    path = Path(worktree.group(1))
    sample = Path(re.search(r"sample repository: (\S+)", out).group(1))  # type: ignore[union-attr]
    assert path.is_relative_to(tmpdir) and not path.is_relative_to(sample), (path, sample)
    assert f"{path} was removed with its branch" in out
    assert "shop/cart.py on disk is untouched until the apply" in out

    # the final buffer against the committed file: the agent's change and both edits that survived
    diff = out[out.index("--- shop/cart.py (committed)") :]
    for added in (
        '+"""A tiny shopping cart, in euros."""',  # typed while the agent ran
        '+    """How many items are in the cart."""',  # unsaved when delegated
        "+        return 0.0",
    ):  # the agent's
        assert added in diff, added
    for kept in (
        "kept | the unsaved docstring",
        "kept | the edit typed meanwhile",
        "kept | the agent's change",
    ):
        assert kept in out, kept
    assert "LOST" not in out

    # never silent for long, and nothing left behind
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(lines)]
    assert max(gaps) < LONGEST_SILENCE_S, out
    assert list(tmpdir.iterdir()) == [], list(tmpdir.iterdir())
    assert re.search(r"removed \S+handoff-demo-", out)
