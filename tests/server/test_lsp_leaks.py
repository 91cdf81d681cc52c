"""Nothing leaks through the server: 50 delegate / apply / discard / cancel cycles over LSP.

One real ``handoff-lsp`` (VS Code's capability set: progress bars, annotations, the lot) and a
fast command agent. The cycles take turns: delegate then apply, delegate then discard, delegate
then cancel while the agent runs, then discard. Afterwards the repository has no session
worktree, no ``handoff/*`` branch and no ref under ``refs/handoff``; the server has no child
process left (zombies included); and its memory and open file descriptors stayed flat after a
warm-up.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.support.git import git_leftovers
from tests.support.lsp_client import Editor
from tests.support.lsp_raw import command, descendants, rss_kib, server_pid, still_serving

CYCLES = 50
WARMUP = 10
RSS_GROWTH_KIB = 15 * 1024  # the bound on the server's growth after the warm-up
FD_GROWTH = 4
APP = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
WHOLE = {"start": {"line": 0, "character": 0}, "end": {"line": 6, "character": 0}}


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_fifty_cycles_leave_nothing_behind(agent, repo: Path):
    agent.configure(wait=True, runs=[[["replace", "app.py", "return a + b", "return a + b  # x"]]])
    editor = await Editor.start("visual_studio_code", repo)
    try:
        uri = editor.open(repo / "app.py")
        pid = server_pid(editor)
        started = time.monotonic()
        worktrees: set[Path] = set()
        applied = 0
        for cycle in range(CYCLES):
            if cycle == WARMUP:
                await editor.wait_for(
                    lambda: not descendants(pid), "the warm-up's processes to end"
                )
                rss_before, fds_before = rss_kib(pid), open_fds(pid)
            sid = (
                await command(
                    editor,
                    "handoff.delegate",
                    {"uri": uri, "range": WHOLE, "instruction": f"cycle {cycle}"},
                )
            )["sessionId"]
            kind = ("apply", "discard", "cancel")[cycle % 3]
            if kind == "cancel":
                await editor.wait_for(lambda sid=sid: agent.started(sid), "the agent to start")
                assert await command(editor, "handoff.cancel", {"sessionId": sid}) == {}
                await editor.wait_state(sid, "cancelled")
                assert await command(editor, "handoff.discard", {"sessionId": sid}) == {}
            else:
                agent.release(sid)
                await editor.wait_state(sid, "ready")
                if kind == "apply":
                    assert await command(editor, "handoff.apply", {"sessionId": sid}) == {
                        "applied": True,
                        "conflicts": 0,
                    }
                    applied += 1
                else:
                    assert await command(editor, "handoff.discard", {"sessionId": sid}) == {}
            s = await editor.wait_state(sid, "applied" if kind == "apply" else "discarded")
            worktrees.add(Path(s["worktree"]))
        elapsed = time.monotonic() - started

        assert editor.text(uri) == APP.replace("return a + b", "return a + b" + "  # x" * applied)
        sessions = await still_serving(editor, uri)
        assert len(sessions) == CYCLES
        assert {s["state"] for s in sessions} == {"applied", "discarded"}
        assert git_leftovers(repo) == ([], [], [])
        assert not any(w.exists() for w in worktrees)
        assert not any(next(iter(worktrees)).parent.iterdir()), "a worktree folder is left"
        await editor.wait_for(
            lambda: not descendants(pid), "the server's child processes to end", timeout=10
        )
        grown = rss_kib(pid) - rss_before
        assert grown < RSS_GROWTH_KIB, (
            f"the server grew by {grown} KiB over {CYCLES - WARMUP} cycles"
        )
        assert open_fds(pid) - fds_before <= FD_GROWTH, (fds_before, os.listdir(f"/proc/{pid}/fd"))
        assert elapsed < 120, f"{CYCLES} cycles took {elapsed:.0f} s"
    finally:
        await editor.stop()
    editor.check_stdout()
