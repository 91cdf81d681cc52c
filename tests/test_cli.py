"""The ``handoff`` CLI, run as a real process in real repositories."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.agents import toml_agents, write_agent


def handoff(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "handoff.agent.cli", *args], cwd=repo,
                          capture_output=True, text=True, timeout=120)


def test_run_ls_show_apply_with_conflict(repo: Path, tmp_path: Path):
    argv = write_agent(tmp_path / "bin", "edit", """
        p = pathlib.Path("app.py")
        p.write_text(p.read_text().replace("return a - b", "return a - b  # agent"))
        pathlib.Path("new file.txt").write_text("created by the agent\\n")
        print("edited sub and added a file")
    """)
    (repo / ".handoff.toml").write_text(toml_agents({"edit": argv}, "edit"))
    run = handoff(repo, "run", "mark sub", "--file", "app.py", "--lines", "5-6")
    assert run.returncode == 0, run.stderr
    sid = run.stdout.split()[0]
    assert "ready" in run.stdout and "edited sub and added a file" in run.stdout
    assert "running" in run.stderr  # progress goes to stderr

    ls = handoff(repo, "ls")
    assert sid in ls.stdout and "ready" in ls.stdout
    show = handoff(repo, "show", sid)
    assert "+    return a - b  # agent" in show.stdout and "new file.txt" in show.stdout

    # the developer changed the same line meanwhile: that file is left untouched
    (repo / "app.py").write_text((repo / "app.py").read_text().replace("return a - b", "return b - a"))
    before = (repo / "app.py").read_bytes()
    apply = handoff(repo, "apply", sid)
    assert apply.returncode == 1
    assert "conflict app.py (lines 6-6)" in apply.stdout
    assert "applied  new file.txt" in apply.stdout
    assert (repo / "app.py").read_bytes() == before
    assert (repo / "new file.txt").read_text() == "created by the agent\n"

    markers = handoff(repo, "apply", sid, "--conflict-markers")
    assert markers.returncode == 0, markers.stdout + markers.stderr
    text = (repo / "app.py").read_text()
    assert "<<<<<<< current" in text and "return a - b  # agent" in text and "return b - a" in text
    assert "applied" in handoff(repo, "ls").stdout


def test_not_a_repository(tmp_path: Path):
    res = handoff(tmp_path, "ls")
    assert res.returncode == 2
    assert "not a git repository" in res.stderr


def test_discard_and_gc(repo: Path, tmp_path: Path):
    argv = write_agent(tmp_path / "bin", "noop", "print('nothing to do')\n")
    (repo / ".handoff.toml").write_text(toml_agents({"noop": argv}, "noop"))
    sid = handoff(repo, "run", "nothing").stdout.split()[0]
    res = handoff(repo, "discard", sid)
    assert res.returncode == 0 and f"{sid} discarded" in res.stdout
    assert handoff(repo, "gc").stdout.startswith("removed 0")
