"""Sessions on a real Ray cluster (``executor = "ray"``), driven through the ``handoff`` CLI.

One Ray head for the module, started by :func:`cluster` on 127.0.0.1 inside a network namespace
with only loopback (Ray registers the machine's interface address otherwise); this test process
enters that namespace too (``setns`` on its main thread), so the CLI, the daemon it starts, the
scripted model and the cluster all meet on 127.0.0.1 and nothing leaves. Token auth on, usage
stats off. Skipped when Ray is not installed, except in CI (``CI=true``), where that fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from handoff.offline_model import ScriptedModel

from tests.support import ray_cluster
from tests.support.agents import trust_repo, write_agent
from tests.support.cli import handoff
from tests.support.git import git, git_leftovers

APP = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
API_KEY = "sk-handoff-ray-test-4c1d2e"


@pytest.fixture(scope="module")
def cluster():
    """One Ray head for the module (tests/support/ray_cluster.py)."""
    why = ray_cluster.missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}: CI must run the Ray tests (.ci/run installs the extra)")
        pytest.skip(why)
    with ray_cluster.ray_head(num_cpus=16) as head:
        yield head


def start_run(repo: Path, instruction: str) -> subprocess.Popen[str]:
    """``handoff run INSTRUCTION`` started in the background (it ends when the session does)."""
    return subprocess.Popen(
        [sys.executable, "-m", "handoff.agent.cli", "run", instruction],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def configure(repo: Path, address: str, agents: dict[str, list[str]] | None = None, **top) -> None:
    lines = ['executor = "ray"', *(f"{k} = {json.dumps(v)}" for k, v in top.items())]
    lines += ["[ray]", f'address = "{address}"', "numCpus = 1"]
    for name, argv in (agents or {}).items():
        lines += [f"[agents.{name}]", f"command = {json.dumps(argv)}"]
    (repo / ".handoff.toml").write_text("\n".join(lines) + "\n")
    git(repo, "add", ".handoff.toml")
    git(repo, "commit", "-q", "-m", "handoff settings")
    trust_repo(repo)


def transcript(state: Path, sid: str) -> list[dict]:
    paths = list(state.glob(f"repos/*/sessions/{sid}/transcript.jsonl"))
    if not paths:
        return []
    return [json.loads(line) for line in paths[0].read_text().splitlines() if line.strip()]


def remote_runs(state: Path, sid: str) -> list[dict]:
    return [e for e in transcript(state, sid) if e.get("type") == "remote"]


def wait_for(check, timeout: float = 60, what: str = "") -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def session_ids(repo: Path) -> list[str]:
    out = handoff(repo, "ls").stdout
    return re.findall(r"^(\d{12}-[0-9a-f]{6})\s", out, re.M)


def state_of(repo: Path, sid: str) -> str:
    line = next(ln for ln in handoff(repo, "ls").stdout.splitlines() if ln.startswith(sid))
    return line.split()[1]


def test_delegate_ready_apply_on_the_cluster(cluster, repo: Path, state_dir: Path):
    """The built-in agent (litellm on the worker, the scripted model over HTTP) edits app.py in
    a worktree on the worker; the result comes back as git objects and applies exactly."""
    with ScriptedModel() as model:
        model.tool_call(
            "edit_file", {"path": "app.py", "oldText": "return a + b", "newText": "return b + a"}
        ).tool_call("finish", {"summary": "swapped the operands"})
        configure(
            repo,
            cluster["address"],
            model="openai/scripted-model",
            apiBase=model.url,
        )
        # an uncommitted change: the snapshot (what the developer sees) travels, not HEAD
        (repo / "README.md").write_text("# sample, edited\n")
        os.environ["HANDOFF_API_KEY"] = API_KEY
        try:
            run = handoff(repo, "run", "swap the operands of add", "--file", "app.py")
        finally:
            del os.environ["HANDOFF_API_KEY"]
        assert run.returncode == 0, run.stdout + run.stderr
        sid = run.stdout.split()[0]
        assert "ready" in run.stdout and "swapped the operands" in run.stdout
        assert len(model.requests) == 2  # litellm on the worker reached the scripted model

    (where,) = remote_runs(state_dir, sid)
    assert where["ip"] == "127.0.0.1" and where["cluster"] == cluster["address"]
    remote_tree = Path(where["worktree"])
    assert remote_tree.is_relative_to(cluster["workdir"])  # on the worker's side
    assert not remote_tree.is_relative_to(state_dir)  # not the daemon's worktrees
    status = handoff(repo, "daemon", "status")
    assert status.returncode == 0
    assert where["pid"] != int(status.stdout.split()[1])  # not the daemon's process
    assert f"executor: ray, cluster {cluster['address']} (1 nodes, 16 CPUs)" in status.stdout
    assert f"{sid} on node 127.0.0.1" in status.stdout

    # the result is in the session's refs, built on the snapshot
    result = git(repo, "rev-parse", f"refs/handoff/{sid}/result").strip()
    assert git(repo, "rev-parse", f"handoff/{sid}").strip() == result
    assert git(repo, "show", f"{result}:README.md") == "# sample, edited\n"

    apply = handoff(repo, "apply", sid)
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert (repo / "app.py").read_text() == APP.replace("return a + b", "return b + a")
    assert (repo / "README.md").read_text() == "# sample, edited\n"
    assert git_leftovers(repo) == ([], [], [])

    # the key went to the worker as a call argument: never in Ray's logs or runtime env
    for path in cluster["logs"].rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert API_KEY.encode() not in path.read_bytes(), path


def test_eight_sessions_at_once(cluster, repo: Path, tmp_path: Path, state_dir: Path):
    """Eight command agents run at the same time, each in its actor's worktree; each result
    applies as its own edit."""
    barrier = tmp_path / "barrier"  # each agent waits there until all eight have started
    barrier.mkdir()
    argv = write_agent(
        tmp_path / "bin",
        "mark",
        f"""
        n = os.environ["HANDOFF_TASK"].split()[-1]
        barrier = pathlib.Path({str(barrier)!r})
        (barrier / n).touch()
        end = time.monotonic() + 120
        while len(list(barrier.iterdir())) < 8 and time.monotonic() < end:
            time.sleep(0.05)
        together = len(list(barrier.iterdir()))
        pathlib.Path(f"out{{n}}.txt").write_text(f"{{n}} {{together}} from {{os.getcwd()}}\\n")
        print(f"wrote out{{n}}.txt")
        """,
    )
    configure(repo, cluster["address"], {"mark": argv}, agent="mark", maxParallel=8)
    procs = [start_run(repo, f"write file {n}") for n in range(8)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    sids = [out.split()[0] for out, _ in outs]
    windows = []
    for n, sid in enumerate(sids):
        (where,) = remote_runs(state_dir, sid)
        windows.append(where["pid"])
        text = git(repo, "show", f"refs/handoff/{sid}/result:out{n}.txt")
        assert text.split(" from ")[0] == f"{n} 8"  # it ran while all eight did
        folder = Path(text.split(" from ")[1].strip())
        assert folder == Path(where["worktree"]) and folder.is_relative_to(cluster["workdir"])
    assert len(set(windows)) == 8  # one actor (worker process) a session
    for n, sid in enumerate(sids):
        assert handoff(repo, "apply", sid).returncode == 0
        assert (repo / f"out{n}.txt").read_text().startswith(f"{n} 8 from ")


def _slow_agent(tmp_path: Path) -> list[str]:
    return write_agent(
        tmp_path / "bin",
        "slow",
        """
        pathlib.Path("started.txt").write_text("yes\\n")
        time.sleep(120)
        print("never")
        """,
    )


def _running(repo: Path, state: Path) -> tuple[str, dict]:
    sid = wait_for(lambda: next(iter(session_ids(repo)), None), what="a session")
    where = wait_for(lambda: remote_runs(state, sid), what="the session on the cluster")[-1]
    wait_for(lambda: (Path(where["worktree"]) / "started.txt").exists(), what="the agent to start")
    return sid, where


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_cancel_ends_the_actor(cluster, repo: Path, tmp_path: Path, state_dir: Path):
    configure(repo, cluster["address"], {"slow": _slow_agent(tmp_path)}, agent="slow")
    runner = start_run(repo, "take your time")
    sid, where = _running(repo, state_dir)
    assert handoff(repo, "cancel", sid).returncode == 0
    wait_for(lambda: state_of(repo, sid) == "cancelled", what="cancelled")
    wait_for(lambda: _gone(where["pid"]), timeout=30, what="the actor's process to end")
    runner.communicate(timeout=30)


def test_worker_killed_mid_run_is_interrupted_and_resumes(
    cluster, repo: Path, tmp_path: Path, state_dir: Path
):
    runs = tmp_path / "runs"  # outside every worktree: the second run knows it is the second
    argv = write_agent(
        tmp_path / "bin",
        "once",
        f"""
        runs = pathlib.Path({str(runs)!r})
        pathlib.Path("started.txt").write_text("started\\n")
        if not runs.exists():
            runs.write_text("first\\n")
            time.sleep(120)
        pathlib.Path("done.txt").write_text("finished on a new worker\\n")
        print("finished")
        """,
    )
    configure(repo, cluster["address"], {"once": argv}, agent="once")
    runner = start_run(repo, "survive a crash")
    sid, where = _running(repo, state_dir)
    os.kill(where["pid"], signal.SIGKILL)  # the worker process running the actor dies
    wait_for(lambda: state_of(repo, sid) == "interrupted", what="interrupted")
    runner.communicate(timeout=30)
    show = handoff(repo, "show", sid).stdout
    assert "was lost mid-run" in show and f"handoff resume {sid}" in show, show

    resume = handoff(repo, "resume", sid)
    assert resume.returncode == 0 and "ready" in resume.stdout, resume.stdout + resume.stderr
    first, second = remote_runs(state_dir, sid)
    assert second["pid"] != first["pid"]  # a new actor, from the session's refs
    assert git(repo, "show", f"refs/handoff/{sid}/result:done.txt") == "finished on a new worker\n"


def test_follow_up_goes_to_the_same_actor(cluster, repo: Path, tmp_path: Path, state_dir: Path):
    argv = write_agent(
        tmp_path / "bin",
        "append",
        """
        p = pathlib.Path("notes.txt")
        old = p.read_text() if p.exists() else ""
        p.write_text(old + os.environ["HANDOFF_TASK"] + "\\n")
        print("appended")
        """,
    )
    configure(repo, cluster["address"], {"append": argv}, agent="append")
    run = handoff(repo, "run", "first note")
    assert run.returncode == 0, run.stdout + run.stderr
    sid = run.stdout.split()[0]
    follow = handoff(repo, "followup", sid, "second note")
    assert follow.returncode == 0 and "ready" in follow.stdout, follow.stdout + follow.stderr
    first, second = remote_runs(state_dir, sid)
    assert first["pid"] == second["pid"] and first["worktree"] == second["worktree"]
    assert handoff(repo, "apply", sid).returncode == 0
    assert (repo / "notes.txt").read_text() == "first note\nsecond note\n"


def test_unreachable_cluster_fails_at_once(cluster, repo: Path, tmp_path: Path):
    address = f"127.0.0.1:{ray_cluster.free_port()}"  # nothing listens there
    argv = write_agent(tmp_path / "bin", "noop", "print('nothing')\n")
    configure(repo, address, {"noop": argv}, agent="noop")
    started = time.monotonic()
    run = handoff(repo, "run", "anything")
    assert time.monotonic() - started < 15
    assert run.returncode != 0
    assert f"cannot reach the Ray cluster at {address}" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert session_ids(repo) == []
    assert git_leftovers(repo) == ([], [], [])


def test_ray_settings_and_their_trust(repo: Path):
    """The ray keys parse from a repository file only once it is trusted; a secret-looking
    variable in the runtime env is refused (Ray's dashboard shows it)."""
    from handoff.agent import config as config_mod

    (repo / ".handoff.toml").write_text(
        'executor = "ray"\n[ray]\naddress = "ray://head:10001"\nnumCpus = 2\nmemoryMb = 512\n'
        'runtimeEnv = {pip = ["pytest"], env_vars = {CI = "1"}}\n'
    )
    cfg, messages = config_mod.load(repo, env={})
    assert cfg.executor == "local" and cfg.ray.address is None and cfg.ray.runtimeEnv == {}
    # how much of a (shared) cluster each session takes is the developer's choice too
    assert cfg.ray.numCpus == 1.0 and cfg.ray.memoryMb is None
    assert any("`executor`, `ray.address`, `ray.runtimeEnv`" in m for m in messages), messages
    trust_repo(repo)
    cfg, messages = config_mod.load(repo, env={})
    assert cfg.executor == "ray" and cfg.ray.address == "ray://head:10001", messages
    assert cfg.ray.runtimeEnv == {"pip": ["pytest"], "env_vars": {"CI": "1"}}
    assert cfg.ray.numCpus == 2 and cfg.ray.memoryMb == 512

    cfg, messages = config_mod.load(
        None,
        env={},
        overrides=[("editor", {"ray": {"runtimeEnv": {"env_vars": {"OPENAI_API_KEY": "sk-x"}}}})],
    )
    assert cfg.ray.runtimeEnv == {}
    assert any("env_vars.OPENAI_API_KEY` looks like one" in m for m in messages), messages
    cfg, messages = config_mod.load(None, env={}, overrides=[("editor", {"executor": "k8s"})])
    assert cfg.executor == "local" and any('one of "local", "ray"' in m for m in messages)


def test_ray_is_never_imported_by_the_language_server_or_an_idle_daemon():
    code = (
        "import sys, handoff.server.server, handoff.server.cli, handoff.agent.daemon, "
        "handoff.agent.manager; print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
