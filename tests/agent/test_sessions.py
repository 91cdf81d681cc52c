"""Sessions end to end with command agents: real git, real processes, no editor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from handoff.agent import config as config_mod
from handoff.agent.manager import DelegateRequest, SessionError, SessionManager
from handoff.agent.processes import pid_alive
from handoff.agent.session import State

from tests.support.agents import command_manager, toml_agents, trust_repo, write_agent
from tests.support.git import git


def dev_state(repo: Path) -> dict:
    """What must never change behind the developer's back."""
    return {
        "index": (repo / ".git" / "index").read_bytes(),
        "status": git(
            repo,
            "-c",
            "core.fsmonitor=false",
            "--no-optional-locks",
            "status",
            "--porcelain=v2",
            "--untracked-files=all",
        ),
        "stash": git(repo, "stash", "list"),
        # session branches (handoff/<id>) are Handoff's own, by design
        "heads": [
            line
            for line in git(repo, "for-each-ref", "refs/heads").splitlines()
            if "refs/heads/handoff/" not in line
        ],
        "head": git(repo, "rev-parse", "HEAD"),
        "files": {
            p.relative_to(repo).as_posix(): p.read_bytes()
            for p in sorted(repo.rglob("*"))
            if p.is_file() and ".git" not in p.parts
        },
    }


async def test_command_agent_env_placeholders_and_result(repo: Path, tmp_path: Path):
    argv = write_agent(
        tmp_path / "bin",
        "env_agent",
        """
        out = {k: v for k, v in os.environ.items() if k.startswith("HANDOFF_")}
        out["argv"] = sys.argv[1:]
        out["cwd"] = os.getcwd()
        out["brief"] = pathlib.Path(os.environ["HANDOFF_TASK_FILE"]).read_text()
        pathlib.Path(sys.argv[3]).write_text(json.dumps(out))
        p = pathlib.Path("app.py")
        p.write_text(p.read_text().replace("return a + b", "return a + b  # checked"))
        print("noise")
        print("added a check comment")
        print("")
    """,
    ) + ["{task_file}", "{task}", str(tmp_path / "seen.json")]
    # uncommitted work the agent must see
    (repo / "app.py").write_text((repo / "app.py").read_text() + "\n# wip\n")
    (repo / "AGENTS.md").write_text("Run pytest before you finish.\n")  # a guide, not committed
    mgr = command_manager(repo, {"env": argv}, "env")
    before = dev_state(repo)
    rng = {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 16}}
    s = mgr.delegate(
        DelegateRequest("add a check", file="app.py", range=rng, uri=(repo / "app.py").as_uri())
    )
    s = await mgr.wait(s.id)
    assert s.state is State.READY, s.error
    assert s.summary == "added a check comment"
    assert s.filesChanged == [(repo / "app.py").as_uri()]
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["HANDOFF_TASK"] == "add a check"
    assert seen["HANDOFF_SESSION_ID"] == s.id
    assert seen["HANDOFF_FILE"] == "app.py"
    assert seen["HANDOFF_RANGE"] == "0:0-1:16"
    assert seen["argv"][0] == seen["HANDOFF_TASK_FILE"] and seen["argv"][1] == "add a check"
    assert Path(seen["cwd"]) == Path(s.worktree)
    assert "def add(a, b):" in seen["brief"] and "uncommitted and unsaved" in seen["brief"]
    assert "## Project guide (AGENTS.md)\n\nRun pytest before you finish." in seen["brief"]
    # the developer's files are untouched until they apply
    assert dev_state(repo) == before
    diff = mgr.diff(s.id)
    assert "+    return a + b  # checked" in diff
    report = mgr.apply_to_disk(s.id)
    assert report.written == ["app.py"] and not report.conflicts
    assert (repo / "app.py").read_text() == (
        "def add(a, b):\n    return a + b  # checked\n\n\ndef sub(a, b):\n    return a - b\n\n# wip\n"
    )
    assert (repo / "AGENTS.md").read_text() == "Run pytest before you finish.\n"
    assert mgr.get(s.id).state is State.APPLIED
    assert not Path(s.worktree).exists()
    assert git(repo, "branch", "--list", "handoff/*") == ""
    assert git(repo, "for-each-ref", f"refs/handoff/{s.id}") == ""


async def test_nonzero_exit_fails_with_stderr_tail(repo: Path, tmp_path: Path):
    argv = write_agent(
        tmp_path / "bin",
        "bad",
        """
        print("working", flush=True)
        for i in range(40):
            print(f"trace line {i}", file=sys.stderr)
        print("boom: the agent gave up", file=sys.stderr)
        sys.exit(3)
    """,
    )
    mgr = command_manager(repo, {"bad": argv}, "bad")
    s = await mgr.wait(mgr.delegate(DelegateRequest("do it")).id)
    assert s.state is State.FAILED
    assert "exited with code 3" in s.error
    assert "boom: the agent gave up" in s.error
    assert "trace line 0\n" not in s.error  # only the tail


async def test_parallel_limit(repo: Path, tmp_path: Path):
    log = tmp_path / "running.log"
    argv = write_agent(
        tmp_path / "bin",
        "slow",
        f"""
        log = pathlib.Path({str(log)!r})
        with open(log, "a") as f: f.write("start\\n")
        time.sleep(0.4)
        with open(log, "a") as f: f.write("end\\n")
        pathlib.Path("out.txt").write_text(os.environ["HANDOFF_SESSION_ID"])
        print("done")
    """,
    )
    mgr = command_manager(repo, {"slow": argv}, "slow", maxParallel=3)
    peak = 0

    def on_change(_s):
        nonlocal peak
        peak = max(peak, sum(1 for x in mgr.list() if x.state is State.RUNNING))

    mgr.subscribe(on_change)
    ids = [mgr.delegate(DelegateRequest(f"task {i}")).id for i in range(8)]
    for sid in ids:
        await mgr.wait(sid)
    assert [mgr.get(i).state for i in ids] == [State.READY] * 8, [mgr.get(i).error for i in ids]
    assert peak == 3
    # and the processes agree: never more than three between start and end
    depth = maxdepth = 0
    for line in log.read_text().split():
        depth += 1 if line == "start" else -1
        maxdepth = max(maxdepth, depth)
    assert maxdepth <= 3


async def test_cancel_kills_process_group(repo: Path, tmp_path: Path):
    pidfile = tmp_path / "pids"
    argv = write_agent(
        tmp_path / "bin",
        "hang",
        f"""
        import subprocess
        child = subprocess.Popen(["sleep", "300"])
        pathlib.Path({str(pidfile)!r}).write_text(f"{{os.getpid()}} {{child.pid}}")
        time.sleep(300)
    """,
    )
    mgr = command_manager(repo, {"hang": argv}, "hang")
    s = mgr.delegate(DelegateRequest("hang"))
    with anyio.fail_after(30):
        while not pidfile.exists() or len(pidfile.read_text().split()) < 2:
            await anyio.sleep(0.05)
    pids = [int(p) for p in pidfile.read_text().split()]
    mgr.cancel(s.id)
    s = await mgr.wait(s.id)
    assert s.state is State.CANCELLED
    for pid in pids:
        with anyio.fail_after(10):
            while _alive(pid):
                await anyio.sleep(0.05)
    # cancelled sessions keep their worktree until discarded
    assert Path(s.worktree).exists()
    mgr.discard(s.id)
    assert not Path(s.worktree).exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_timeout_fails_with_limit_message(repo: Path, tmp_path: Path):
    argv = write_agent(tmp_path / "bin", "sleepy", "time.sleep(60)\n")
    mgr = command_manager(repo, {"sleepy": argv}, "sleepy", timeoutS=0.5)
    s = await mgr.wait(mgr.delegate(DelegateRequest("sleep")).id)
    assert s.state is State.FAILED
    assert "timeoutS" in s.error


async def test_follow_up_continues_in_same_worktree(repo: Path, tmp_path: Path):
    argv = write_agent(
        tmp_path / "bin",
        "append",
        """
        p = pathlib.Path("notes.txt")
        p.write_text((p.read_text() if p.exists() else "") + os.environ["HANDOFF_TASK"] + "\\n")
        print("appended")
    """,
    )
    mgr = command_manager(repo, {"append": argv}, "append")
    s = await mgr.wait(mgr.delegate(DelegateRequest("first")).id)
    assert s.state is State.READY
    mgr.follow_up(s.id, "second")
    s = await mgr.wait(s.id)
    assert s.state is State.READY and s.runs == 2
    assert (Path(s.worktree) / "notes.txt").read_text() == "first\nsecond\n"
    mgr.apply_to_disk(s.id)
    assert (repo / "notes.txt").read_text() == "first\nsecond\n"


async def test_merge_clean_and_conflict_via_apply(repo: Path, tmp_path: Path):
    argv = write_agent(
        tmp_path / "bin",
        "edit",
        """
        p = pathlib.Path("app.py")
        p.write_text(p.read_text().replace("return a - b", "return a - b  # agent"))
        print("edited sub")
    """,
    )
    mgr = command_manager(repo, {"edit": argv}, "edit")
    clean = await mgr.wait(mgr.delegate(DelegateRequest("a")).id)
    clash = await mgr.wait(mgr.delegate(DelegateRequest("b")).id)
    # the developer edits meanwhile: a different line
    text = (repo / "app.py").read_text().replace("def add(a, b):", "def add(a: int, b: int):")
    (repo / "app.py").write_text(text)
    report = mgr.apply_to_disk(clean.id)
    assert not report.conflicts
    merged = (repo / "app.py").read_text()
    assert "def add(a: int, b: int):" in merged and "return a - b  # agent" in merged
    # now the same line differs between the developer and the second session
    (repo / "app.py").write_text(merged.replace("return a - b  # agent", "return b - a"))
    before = (repo / "app.py").read_bytes()
    report = mgr.apply_to_disk(clash.id)
    assert [fm.path for fm in report.conflicts] == ["app.py"]
    assert report.conflicts[0].conflicts[0].start == 5  # 0-based line of `return b - a`
    assert (repo / "app.py").read_bytes() == before
    assert mgr.get(clash.id).state is State.READY


async def test_unknown_session_and_not_ready(repo: Path, tmp_path: Path):
    argv = write_agent(tmp_path / "bin", "quick", "print('ok')\n")
    mgr = command_manager(repo, {"quick": argv}, "quick")
    with pytest.raises(SessionError, match="no session"):
        mgr.get("nope")
    s = mgr.delegate(DelegateRequest("x"))
    with pytest.raises(SessionError, match="not ready"):
        mgr.plan(s.id, mgr.read_disk)
    await mgr.wait(s.id)


def test_sigkill_mid_session_then_reload_and_discard(repo: Path, tmp_path: Path):
    started = tmp_path / "started"
    argv = write_agent(
        tmp_path / "bin",
        "hang",
        f"""
        pathlib.Path("partial.txt").write_text("half done")
        pathlib.Path({str(started)!r}).write_text("1")
        time.sleep(300)
    """,
    )
    (repo / ".handoff.toml").write_text(toml_agents({"hang": argv}, "hang"))
    trust_repo(repo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "handoff.agent.cli", "run", "wait forever"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the terminal, then the daemon that ran the session
    proc.wait()
    proc.stdout.close()  # not read to the end: the orphaned agent may still hold the other ends
    proc.stderr.close()
    daemon = int((Path(os.environ["HANDOFF_STATE_DIR"]) / "daemon" / "daemon.pid").read_text())
    os.kill(daemon, signal.SIGKILL)
    while pid_alive(daemon):  # gone (it was detached: init reaps it)
        assert time.monotonic() < deadline
        time.sleep(0.05)

    cfg, _ = config_mod.load(repo)
    mgr = SessionManager(repo, cfg)
    agent_pid = json.loads(
        (Path(mgr.store.session_dir(mgr.store.load_all()[0].id)) / "record.json").read_text()
    )["agentPid"]
    assert _alive(agent_pid)  # the orphan a crash leaves behind...
    [s] = mgr.load()
    assert s.state is State.INTERRUPTED
    deadline = time.monotonic() + 10
    while _alive(agent_pid):  # ...is stopped when the sessions are reloaded
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert (Path(s.worktree) / "partial.txt").read_text() == "half done"
    mgr.discard(s.id)
    assert not Path(s.worktree).exists()
    assert git(repo, "branch", "--list", "handoff/*") == ""
    assert git(repo, "for-each-ref", "refs/handoff/") == ""
    assert "handoff" not in git(repo, "worktree", "list", "--porcelain")
    assert SessionManager(repo, cfg).load()[0].state is State.DISCARDED


def test_gc_removes_leftovers(repo: Path, state_dir: Path):
    # a crash can leave a branch, a ref and a worktree with no record at all
    base = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "update-ref", "refs/handoff/dead-1/base", base)
    git(repo, "worktree", "add", "-q", "-b", "handoff/dead-1", str(state_dir / "wt"), base)
    cfg, _ = config_mod.load(repo)
    mgr = SessionManager(repo, cfg)
    mgr.load()
    assert mgr.gc() == ["dead-1"]
    assert git(repo, "branch", "--list", "handoff/*") == ""
    assert git(repo, "for-each-ref", "refs/handoff/") == ""
    assert not (state_dir / "wt").exists()


async def test_finished_sessions_are_forgotten_after_keep_finished_days(repo: Path, tmp_path: Path):
    """Applied and discarded sessions leave the list (and the state dir) keepFinishedDays after
    they ended; sessions that still hold work (ready, failed, ...) are never forgotten; 0 keeps
    everything."""
    argv = write_agent(
        tmp_path / "bin",
        "one_file",
        'pathlib.Path("out.txt").write_text(os.environ["HANDOFF_SESSION_ID"])',
    )
    mgr = command_manager(repo, {"one": argv}, "one", keepFinishedDays=2)
    ids = []
    for i in range(4):
        s = await mgr.wait(mgr.delegate(DelegateRequest(f"task {i}")).id)
        assert s.state is State.READY, s.error
        ids.append(s.id)
    old_applied, old_discarded, old_ready, new_discarded = ids
    mgr.mark_applied(old_applied)
    mgr.discard(old_discarded)
    mgr.discard(new_discarded)

    def age(sid: str, days: float) -> None:
        record = mgr.store.session_dir(sid) / "record.json"
        data = json.loads(record.read_text())
        data["updatedAt"] = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - days * 86400)
        )
        record.write_text(json.dumps(data))

    for sid in (old_applied, old_discarded, old_ready):
        age(sid, 3)
    age(new_discarded, 1)

    kept = command_manager(repo, {"one": argv}, "one", keepFinishedDays=0)
    assert sorted(s.id for s in kept.list()) == sorted(ids)  # 0: kept for ever

    later = command_manager(repo, {"one": argv}, "one", keepFinishedDays=2)
    assert sorted(s.id for s in later.list()) == sorted([old_ready, new_discarded])
    assert not mgr.store.session_dir(old_applied).exists()
    assert not mgr.store.session_dir(old_discarded).exists()
    assert later.get(old_ready).state is State.READY and later.diff(old_ready)
    with pytest.raises(SessionError):
        later.get(old_applied)


async def test_a_worktree_readied_early_never_outlives_a_session_that_does_not_start(
    repo: Path, tmp_path: Path
):
    """A session's worktree is readied while its snapshot is taken; when the snapshot fails, or
    the session is cancelled while it waits for a slot, that worktree goes (nothing stays in
    git's worktree list, nor in the pool's folder)."""
    argv = write_agent(
        tmp_path / "bin", "slow", 'time.sleep(2.0); pathlib.Path("out.txt").write_text("x")'
    )
    mgr = command_manager(repo, {"slow": argv}, "slow", maxParallel=1)
    bad = mgr.delegate(DelegateRequest("bad overlay", overlays={"../outside.txt": b"x"}))
    both = [mgr.delegate(DelegateRequest("runs")), mgr.delegate(DelegateRequest("waits"))]
    await mgr.wait(bad.id)
    assert mgr.get(bad.id).state is State.FAILED
    # Both were readied early (the slot was free when they were delegated); whichever snapshot
    # came second waits for the slot: cancel it there.
    with anyio.fail_after(30):
        while True:
            states = {mgr.get(s.id).state for s in both}
            waiting = [s for s in both if mgr.get(s.id).baseCommit]
            if states == {State.RUNNING, State.QUEUED} and len(waiting) == 2:
                break
            await anyio.sleep(0.01)
    [runs] = [s for s in both if mgr.get(s.id).state is State.RUNNING]
    [queued] = [s for s in both if s is not runs]
    mgr.cancel(queued.id)
    await mgr.wait(queued.id)
    await mgr.wait(runs.id)
    assert mgr.get(runs.id).state is State.READY, mgr.get(runs.id).error
    assert mgr.get(queued.id).state is State.CANCELLED
    listed = [
        line[len("worktree ") :]
        for line in git(repo, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ")
    ]
    assert listed[1:] == [mgr.get(runs.id).worktree]
    assert not [p for p in mgr.pool.folder.glob("p-*")]
