"""Nothing is left behind, nothing secret is written down (issue 5, agent side).

- 50 delegate/apply/discard/cancel cycles through one SessionManager (as a long-running
  server holds it) end with zero worktrees, handoff branches, refs under refs/handoff and
  child processes, and the process's memory flat.
- With HANDOFF_API_KEY set, a model and a command agent that echo the key: the key appears
  nowhere under the state folder (records, transcripts, briefs, conversations), in the
  session as the editor gets it, in the terminal output, or in the logs.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from handoff.agent import config as config_mod
from handoff.agent.backends import model as model_mod
from handoff.agent.manager import DelegateRequest, SessionManager
from handoff.agent.session import State
from handoff.offline_model import ScriptedModel

from tests.support.agents import toml_agents, trust_repo
from tests.support.dev_state import assert_untouched, dev_state
from tests.support.git import git

CYCLES = 50
RSS_GROWTH_LIMIT = 16 * 1024 * 1024  # bytes over the last 40 cycles, after 10 of warm-up


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def leftover_processes(state_dir: Path) -> list[str]:
    """Children of this process, and any process working somewhere under the state folder."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            cwd = os.readlink(entry / "cwd")
        except (OSError, ValueError):
            continue
        if ppid == me or cwd.startswith(str(state_dir)):
            found.append(f"{entry.name} {(entry / 'cmdline').read_bytes()!r} in {cwd}")
    return found


async def test_fifty_cycles_leave_nothing(repo: Path, state_dir: Path) -> None:
    agent = [
        "sh",
        "-c",
        'case "$HANDOFF_TASK" in slow*) sleep 60;; esac; '
        'echo "$HANDOFF_SESSION_ID" >> notes.txt; echo "noted $HANDOFF_TASK"',
    ]
    (repo / ".handoff.toml").write_text(toml_agents({"note": agent}, "note", maxParallel=2))
    trust_repo(repo)
    git(repo, "add", ".handoff.toml")
    git(repo, "commit", "-q", "-m", "config")
    cfg, messages = config_mod.load(repo)
    assert messages == []
    mgr = SessionManager(repo, cfg)
    mgr.load()
    applied = 0
    baseline = 0
    for i in range(CYCLES):
        if i == 10:
            gc.collect()
            baseline = rss()
        kind = ("apply", "discard", "cancel-queued", "cancel-running")[i % 4]
        s = mgr.delegate(
            DelegateRequest(("slow " if kind == "cancel-running" else "") + f"task {i}")
        )
        if kind == "cancel-queued":
            mgr.cancel(s.id)
        elif kind == "cancel-running":
            with anyio.fail_after(30):
                while mgr.get(s.id).agentPid is None:
                    await anyio.sleep(0.01)
            mgr.cancel(s.id)
        s = await mgr.wait(s.id)
        if kind == "apply":
            assert s.state is State.READY, s.error
            report = mgr.apply_to_disk(s.id)
            assert report.written == ["notes.txt"] and not report.conflicts
            applied += 1
        else:
            assert s.state is (State.READY if kind == "discard" else State.CANCELLED), s.error
            mgr.discard(s.id)
        assert mgr.get(s.id).state in (State.APPLIED, State.DISCARDED)
    gc.collect()
    growth = rss() - baseline

    assert len((repo / "notes.txt").read_text().splitlines()) == applied == CYCLES // 4 + 1
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert git(repo, "branch", "--list", "handoff/*") == ""
    assert git(repo, "for-each-ref", "refs/handoff/") == ""
    assert list((mgr.store.root / "worktrees").iterdir()) == []
    assert not any(p.name.endswith("handoff-tmp") for p in repo.iterdir())
    with anyio.fail_after(10):  # killed agents are reaped a moment after their session ends
        while leftover_processes(state_dir):
            await anyio.sleep(0.05)
    assert mgr.gc() == []  # nothing for gc to find either
    assert growth < RSS_GROWTH_LIMIT, (
        f"RSS grew by {growth / 2**20:.1f} MiB over {CYCLES - 10} cycles"
    )


def test_gc_removes_what_a_crash_left(repo: Path, tmp_path: Path, state_dir: Path) -> None:
    """The session daemon killed mid-session, then its records lost: a worktree, a branch, refs
    and a running agent are left; `handoff gc` removes them all."""
    started = tmp_path / "started"
    agent = ["sh", "-c", f"touch {started}; sleep 120"]
    (repo / ".handoff.toml").write_text(toml_agents({"hang": agent}, "hang"))
    trust_repo(repo)
    before = dev_state(repo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "handoff.agent.cli", "run", "hang"],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(600):
            if started.exists():
                break
            assert proc.poll() is None
            time.sleep(0.05)
        proc.kill()  # the terminal first (it would start a new daemon), then the daemon
        proc.wait()
        os.kill(int((state_dir / "daemon" / "daemon.pid").read_text()), signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert git(repo, "branch", "--list", "handoff/*") != ""
    assert leftover_processes(state_dir) != []  # the orphaned agent, still in its worktree
    for folder in state_dir.rglob("sessions"):
        shutil.rmtree(folder)
    out = subprocess.run(
        [sys.executable, "-m", "handoff.agent.cli", "gc"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("removed 1 leftover session(s)")
    assert git(repo, "branch", "--list", "handoff/*") == ""
    assert git(repo, "for-each-ref", "refs/handoff/") == ""
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    deadline = time.monotonic() + 10
    while leftover_processes(state_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftover_processes(state_dir) == []
    assert_untouched(repo, before)


# -- secrets -----------------------------------------------------------------------------------

KEY = "sk-leak-test-" + "5" * 30


def grep_state(state_dir: Path, needle: str) -> list[str]:
    hits = []
    for path in state_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle.encode() in path.read_bytes():
                    hits.append(str(path.relative_to(state_dir)))
            except OSError:
                continue
    return hits


@pytest.fixture(scope="module")
def litellm_ready() -> None:
    model_mod.import_litellm()


async def test_the_api_key_is_never_written_down(
    repo: Path,
    state_dir: Path,
    litellm_ready: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HANDOFF_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    with ScriptedModel() as model:
        (repo / ".handoff.toml").write_text(
            f'model = "openai/scripted-model"\napiBase = "{model.url}"\n'
        )
        trust_repo(repo)
        cfg, _ = config_mod.load(repo)
        assert cfg.apiKey == KEY
        # a model that knows the key (it was sent to it) and repeats it everywhere it can
        model.tool_call("run_command", {"command": f'echo {KEY}; echo "env: [$HANDOFF_API_KEY]"'})
        model.tool_call("write_file", {"path": "notes.md", "content": "no secret here\n"})
        model.add(
            {
                "content": f"thinking about {KEY}",
                "tool_calls": [{"name": "finish", "arguments": {"summary": f"done, key {KEY}"}}],
            }
        )
        model.status(
            401,
            {
                "error": {
                    "message": f"Incorrect API key provided: {KEY}",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        )
        mgr = SessionManager(repo, cfg)
        mgr.load()
        s = await mgr.wait(mgr.delegate(DelegateRequest(f"use the key {KEY} wisely")).id)
        assert s.state is State.READY, s.error
        assert s.summary == "done, key ***"
        seen = [m["content"] for m in model.requests[1]["messages"] if m["role"] == "tool"]
        assert seen[0] == f"exit code: 0\n{KEY}\nenv: []"  # the command never had it in its env
        mgr.follow_up(s.id, "again")
        s = await mgr.wait(s.id)
        assert s.state is State.FAILED and "authentication" in s.error
        assert model.requests[0]["messages"][1]["content"].count("***") == 1  # brief redacted too
    for x in mgr.list():  # what the editor is sent (the instruction is the developer's own text)
        assert KEY not in (x.error or "") + x.summary
    assert grep_state(state_dir, KEY) == []
    assert grep_state(state_dir, "***") != []  # the redacted places are there
    assert KEY not in caplog.text


def test_a_command_agent_echoing_the_key(repo: Path, state_dir: Path, tmp_path: Path) -> None:
    """The key passed on purpose (passEnv) and printed everywhere: the terminal, the records,
    the transcript and the log (-v) still never show it."""
    agent = [
        sys.executable,
        "-c",
        (
            "import os, sys; k = os.environ['HANDOFF_API_KEY']; print('key:', k); "
            "print('stderr key:', k, file=sys.stderr); open('leak.txt', 'w').write('ok'); "
            "print('summary with', k); sys.exit(3)"
        ),
    ]
    (repo / ".handoff.toml").write_text(
        toml_agents({"echo": agent}, "echo") + 'passEnv = ["HANDOFF_API_KEY"]\n'
    )
    trust_repo(repo)
    env = {**os.environ, "HANDOFF_API_KEY": KEY}
    proc = subprocess.run(
        [sys.executable, "-m", "handoff.agent.cli", "-v", "run", "print the key"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert "exited with code 3" in proc.stdout and "stderr key: ***" in proc.stdout
    assert KEY not in proc.stdout + proc.stderr
    assert grep_state(state_dir, KEY) == []
    transcript = next(state_dir.rglob("transcript.jsonl")).read_text()
    assert "key: ***" in transcript and "stderr key: ***" in transcript
