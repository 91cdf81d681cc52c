"""The ``handoff`` CLI, run as a real process in real repositories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from handoff.offline_model import ScriptedModel

from tests.support.agents import toml_agents, trust_repo, write_agent
from tests.support.cli import handoff


def test_run_ls_show_apply_with_conflict(repo: Path, tmp_path: Path):
    argv = write_agent(
        tmp_path / "bin",
        "edit",
        """
        p = pathlib.Path("app.py")
        p.write_text(p.read_text().replace("return a - b", "return a - b  # agent"))
        pathlib.Path("new file.txt").write_text("created by the agent\\n")
        print("edited sub and added a file")
    """,
    )
    (repo / ".handoff.toml").write_text(toml_agents({"edit": argv}, "edit"))
    trust_repo(repo)
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
    (repo / "app.py").write_text(
        (repo / "app.py").read_text().replace("return a - b", "return b - a")
    )
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
    trust_repo(repo)
    sid = handoff(repo, "run", "nothing").stdout.split()[0]
    res = handoff(repo, "discard", sid)
    assert res.returncode == 0 and f"{sid} discarded" in res.stdout
    assert handoff(repo, "gc").stdout.startswith("removed 0")


def test_killed_run_goes_on_a_killed_daemon_interrupts_then_resumed_and_followed_up(
    repo: Path, tmp_path: Path, state_dir: Path
):
    import os
    import signal
    import time

    started = tmp_path / "started"
    argv = write_agent(
        tmp_path / "bin",
        "resumable",
        f"""
        notes = pathlib.Path("notes.txt")
        if not notes.exists():  # first run: leave partial work, then hang until killed
            notes.write_text("partial\\n")
            pathlib.Path({str(started)!r}).write_text("1")
            time.sleep(300)
        notes.write_text(notes.read_text() + os.environ["HANDOFF_TASK"] + "\\n")
        print("continued")
    """,
    )
    (repo / ".handoff.toml").write_text(toml_agents({"r": argv}, "r"))
    trust_repo(repo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "handoff.agent.cli", "run", "first"],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    ls = handoff(repo, "ls")  # the terminal went away; the session goes on in the daemon
    assert "running" in ls.stdout, ls.stdout
    daemon_pid = int((state_dir / "daemon" / "daemon.pid").read_text())
    os.kill(daemon_pid, signal.SIGKILL)  # the daemon dies: its sessions stop, as with a crash
    while Path(f"/proc/{daemon_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # (reaped by init: it was detached)

    ls = handoff(repo, "ls")  # a new daemon starts and finds the session interrupted
    assert "interrupted" in ls.stdout, ls.stdout
    sid = ls.stdout.splitlines()[1].split()[0]
    resumed = handoff(repo, "resume", sid)
    assert resumed.returncode == 0, resumed.stderr
    assert "ready" in resumed.stdout
    more = handoff(repo, "followup", sid, "second")
    assert more.returncode == 0, more.stderr
    assert handoff(repo, "apply", sid).returncode == 0
    assert (repo / "notes.txt").read_text() == "partial\nfirst\nsecond\n"


def test_local_model_recipe_from_the_readme(repo: Path, tmp_path: Path):
    """`HANDOFF_MODEL=openai/<name>` + `HANDOFF_API_BASE`, no key set anywhere, as a user types it."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    with ScriptedModel() as model:
        model.tool_call(
            "edit_file",
            {"path": "app.py", "oldText": "return a - b", "newText": "return a - b  # local model"},
        )
        model.tool_call("finish", {"summary": "edited by a local model"})
        env.update(HANDOFF_MODEL="openai/qwen2.5-coder", HANDOFF_API_BASE=model.url)
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "handoff.agent.cli",
                "run",
                "mark sub",
                "--file",
                "app.py",
                "--lines",
                "5-6",
            ],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ready" in run.stdout and "edited by a local model" in run.stdout
    assert "Missing credentials" not in run.stderr and "OPENAI_API_KEY" not in run.stderr
    assert len(model.requests) == 2 and model.requests[0]["model"] == "qwen2.5-coder"
    sid = run.stdout.split()[0]
    assert "+    return a - b  # local model" in handoff(repo, "show", sid).stdout
