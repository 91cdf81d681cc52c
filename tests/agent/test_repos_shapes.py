"""Shapes real repositories have: linked worktrees, the developer's hooks, a husky layout,
a read-only state folder. Real git, real agent processes, the CLI as typed."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

from handoff.agent.manager import DelegateRequest
from handoff.agent.session import State

from tests.support.agents import command_manager, toml_agents, trust_repo, write_agent
from tests.support.cli import handoff
from tests.support.git import git

HOOKS = (
    "post-index-change",
    "reference-transaction",
    "post-checkout",
    "post-commit",
    "pre-commit",
    "commit-msg",
    "post-rewrite",
    "pre-auto-gc",
    "post-merge",
)


def install_hooks(folder: Path, marker: Path, who: str) -> None:
    """Hooks that append a line to ``marker`` whenever git runs them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in HOOKS:
        hook = folder / name
        hook.write_text(f'#!/bin/sh\necho "{who} {name} $*" >> "{marker}"\n')
        hook.chmod(0o755)


def edit_agent(tmp_path: Path, name: str = "edit", extra: str = "") -> list[str]:
    return write_agent(
        tmp_path / "bin",
        name,
        f"""
        p = pathlib.Path("app.py")
        p.write_text(p.read_text().replace("return a + b", "return a + b  # checked"))
        {extra}
        print("checked")
    """,
    )


# -- linked worktrees -------------------------------------------------------------------------


def test_a_linked_worktrees_sessions_survive_gc_in_the_main_checkout(repo: Path, tmp_path: Path):
    """`git worktree add ../wt`; sessions started in wt with `handoff run` (one ready, one still
    running); `handoff gc` in the main checkout and `git gc --prune=now`: both sessions keep
    their refs, branch, worktree and agent, and the ready one can still be applied in wt."""
    wt = tmp_path / "wt"
    gate = tmp_path / "go"
    waiting = write_agent(
        tmp_path / "bin",
        "waits",
        f"""
        while not pathlib.Path({str(gate)!r}).exists():
            time.sleep(0.05)
        pathlib.Path("later.txt").write_text("later\\n")
        print("waited")
    """,
    )
    (repo / ".handoff.toml").write_text(
        toml_agents({"edit": edit_agent(tmp_path), "waits": waiting}, "edit")
    )
    git(repo, "add", ".handoff.toml")
    git(repo, "commit", "-qm", "settings")
    git(repo, "worktree", "add", "-q", "-b", "feature", str(wt))
    trust_repo(wt)
    out = handoff(wt, "run", "check")
    assert out.returncode == 0, out.stdout + out.stderr
    [ready] = re.findall(r"Apply: handoff apply (\S+)", out.stdout)
    follower = subprocess.Popen(
        [sys.executable, "-m", "handoff.agent.cli", "run", "wait", "--agent", "waits"],
        cwd=wt,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        running = None
        deadline = time.monotonic() + 60
        while running is None:  # the record says running once the agent started
            assert time.monotonic() < deadline, "the waiting agent never started"
            for path in state_dir_records():
                rec = json.loads(path.read_text())
                if rec["agent"] == "waits" and rec["state"] == "running" and rec["agentPid"]:
                    running = rec
            time.sleep(0.05)

        out = handoff(repo, "gc")
        assert out.returncode == 0 and out.stdout.startswith("removed 0"), out.stdout + out.stderr
        git(repo, "gc", "-q", "--prune=now")
        for sid in (ready, running["id"]):
            assert git(repo, "rev-parse", f"refs/handoff/{sid}/base")
            assert git(repo, "branch", "--list", f"handoff/{sid}").strip()
            assert Path(record_of(sid)["worktree"]).is_dir()
        gate.write_text("go")
        stdout, stderr = follower.communicate(timeout=120)
        assert follower.returncode == 0, stdout + stderr  # its agent was not killed
    finally:
        follower.kill()
    assert record_of(running["id"])["state"] == "ready"
    assert git(wt, "cat-file", "-t", record_of(ready)["resultCommit"]).strip() == "commit"
    out = handoff(wt, "apply", ready)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "return a + b  # checked" in (wt / "app.py").read_text()
    assert "# checked" not in (repo / "app.py").read_text()  # the main checkout is another tree


def state_dir_records() -> list[Path]:
    return list(Path(os.environ["HANDOFF_STATE_DIR"]).glob("repos/*/sessions/*/record.json"))


def record_of(sid: str) -> dict:
    [path] = [p for p in state_dir_records() if p.parent.name == sid]
    return json.loads(path.read_text())


async def test_gc_still_removes_what_is_provably_orphaned(
    repo: Path, tmp_path: Path, state_dir: Path
):
    """A session with no record, and one whose record says discarded, go; a ready one stays."""
    mgr = command_manager(repo, {"edit": edit_agent(tmp_path)}, "edit")
    keep = await mgr.wait(mgr.delegate(DelegateRequest("check")).id)
    done = await mgr.wait(mgr.delegate(DelegateRequest("check again")).id)
    base = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "update-ref", "refs/handoff/nobody-1/base", base)
    git(repo, "branch", "handoff/nobody-1", base)
    # a discarded record whose refs a crash left behind
    git(repo, "update-ref", f"refs/handoff/{done.id}/base", done.baseCommit)
    mgr.discard(done.id)
    git(repo, "update-ref", f"refs/handoff/{done.id}/base", done.baseCommit)
    assert sorted(mgr.gc()) == sorted([done.id, "nobody-1"])
    assert git(repo, "rev-parse", f"refs/handoff/{keep.id}/base")
    assert mgr.get(keep.id).state is State.READY and Path(keep.worktree).is_dir()


# -- hooks ------------------------------------------------------------------------------------


async def test_no_hook_of_the_developer_runs(repo: Path, tmp_path: Path):
    """Hooks in .git/hooks that write a marker: snapshot, agent, result, apply, discard and gc
    run none of them (git itself does run them: checked first)."""
    marker = tmp_path / "hooks-ran"
    install_hooks(repo / ".git" / "hooks", marker, "developer")
    git(repo, "update-ref", "refs/control", "HEAD")
    git(repo, "update-ref", "-d", "refs/control")
    assert "developer reference-transaction" in marker.read_text()  # the hooks work
    marker.unlink()

    (repo / "README.md").write_text("# sample\nuncommitted\n")  # something for the snapshot
    mgr = command_manager(repo, {"edit": edit_agent(tmp_path)}, "edit")
    applied = await mgr.wait(mgr.delegate(DelegateRequest("check")).id)
    assert applied.state is State.READY, applied.error
    mgr.apply_to_disk(applied.id)
    discarded = await mgr.wait(mgr.delegate(DelegateRequest("check")).id)
    mgr.discard(discarded.id)
    mgr.gc()
    assert handoff(repo, "gc").returncode == 0
    assert not marker.exists(), marker.read_text()
    assert "return a + b  # checked" in (repo / "app.py").read_text()


async def test_a_relative_hooks_path_runs_no_hook_an_agent_wrote(repo: Path, tmp_path: Path):
    """husky's layout (`core.hooksPath = .husky/_`, relative to each worktree): the developer's
    hooks there and hooks the agent wrote and made executable in its worktree never run."""
    marker = tmp_path / "hooks-ran"
    install_hooks(repo / ".husky" / "_", marker, "developer")
    git(repo, "add", "-A")
    git(repo, "-c", "core.hooksPath=/dev/null", "commit", "-q", "-m", "husky")
    git(repo, "config", "core.hooksPath", ".husky/_")
    git(repo, "update-ref", "refs/control", "HEAD")
    git(repo, "update-ref", "-d", "refs/control")
    assert "developer reference-transaction" in marker.read_text()  # the hooks work
    marker.unlink()

    agent = edit_agent(
        tmp_path,
        "hooker",
        f"""
        for name in {HOOKS!r}:
            hook = pathlib.Path(".husky/_") / name
            hook.write_text('#!/bin/sh\\necho "agent ' + name + '" >> "{marker}"\\n')
            hook.chmod(0o755)
    """,
    )
    mgr = command_manager(repo, {"hooker": agent}, "hooker")
    s = await mgr.wait(mgr.delegate(DelegateRequest("check")).id)
    assert s.state is State.READY, s.error
    worktree_hook = Path(s.worktree) / ".husky" / "_" / "post-index-change"
    assert "agent" in worktree_hook.read_text()  # the agent did write its hooks
    mgr.diff(s.id)
    mgr.apply_to_disk(s.id)
    mgr.gc()
    assert not marker.exists(), marker.read_text()


# -- a read-only state folder -----------------------------------------------------------------


def read_only(folder: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with ``folder`` read-only: a read-only bind mount in a private mount
    namespace (we may be root, whom file modes do not stop), else by its mode."""
    if os.geteuid() == 0:
        script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        cmd = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            str(folder),
            *argv,
        ]
        return subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
        )
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        return subprocess.run(
            list(argv), cwd=cwd, capture_output=True, text=True, timeout=120, check=False
        )
    finally:
        folder.chmod(0o755)


def test_a_read_only_state_folder_is_one_line_naming_it(repo: Path, state_dir: Path):
    cli = [sys.executable, "-m", "handoff.agent.cli"]
    (repo / ".handoff.toml").write_text("maxSteps = 3\n")
    for args in (["run", "anything"], ["ls"], ["trust"]):
        out = read_only(state_dir, *cli, *args, cwd=repo)
        assert "Traceback" not in out.stderr, out.stderr
        if args == ["ls"] and out.returncode == 0:
            continue  # listing needs no write
        assert out.returncode != 0
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, out.stderr
        assert str(state_dir) in lines[0] and "HANDOFF_STATE_DIR" in lines[0], lines[0]


# -- submodules -------------------------------------------------------------------------------


async def test_the_brief_says_submodules_are_empty(repo: Path, tmp_path: Path):
    lib = tmp_path / "lib"
    lib.mkdir()
    git(lib, "init", "-q", "-b", "main")
    (lib / "lib.py").write_text("LIB = 1\n")
    git(lib, "add", "-A")
    git(lib, "commit", "-qm", "lib")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib")
    git(repo, "commit", "-qm", "add submodule")
    seen = tmp_path / "seen.txt"
    agent = write_agent(
        tmp_path / "bin",
        "reader",
        f"""
        brief = pathlib.Path(os.environ["HANDOFF_TASK_FILE"]).read_text()
        listing = sorted(os.listdir("vendor/lib"))
        pathlib.Path({str(seen)!r}).write_text(brief + "\\nLISTING " + repr(listing))
        print("read")
    """,
    )
    mgr = command_manager(repo, {"reader": agent}, "reader")
    s = await mgr.wait(mgr.delegate(DelegateRequest("look")).id)
    assert s.state is State.READY, s.error
    text = seen.read_text()
    assert "LISTING []" in text  # the fact the brief tells
    assert "git submodules (`vendor/lib`)" in text and "folders are empty" in text


# -- rough edges ------------------------------------------------------------------------------


def test_bad_arguments_and_an_apply_with_nothing_to_write_say_so(repo: Path, tmp_path: Path):
    for args, says in (
        (["run", "x", "--lines", "foo"], "--lines wants A-B"),
        (["run", "x", "--file", "app.py", "--lines", "5-2"], "--lines wants A-B"),
        (["run", "x", "--file", "nope.py"], "--file nope.py: no such file"),
    ):
        out = handoff(repo, *args)
        assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
        [line] = out.stderr.strip().splitlines()
        assert says in line, line
    (repo / ".handoff.toml").write_text(toml_agents({"edit": edit_agent(tmp_path)}, "edit"))
    trust_repo(repo)
    out = handoff(repo, "run", "check")
    assert out.returncode == 0, out.stdout + out.stderr
    [sid] = re.findall(r"Apply: handoff apply (\S+)", out.stdout)
    app = repo / "app.py"
    app.write_text(app.read_text().replace("return a + b", "return a + b  # checked"))  # by hand
    out = handoff(repo, "apply", sid)
    assert out.returncode == 0 and "nothing to write" in out.stdout, out.stdout + out.stderr
    assert record_of(sid)["state"] == "applied"
