"""Every worktree of a repository sees the same sessions (`git worktree add ../wt`): listed from
each, applied only in the tree they were started from (refused elsewhere, with a message naming
it), discarded from anywhere, kept by `handoff gc` on either side and by `git gc --prune=now`.
The CLI as typed, the server over stdio, real git, real command agents."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from handoff.agent import config as config_mod
from handoff.agent.manager import DelegateRequest, SessionManager
from handoff.agent.session import State
from handoff.agent.store import Store, repo_key, state_root
from pygls.exceptions import JsonRpcException

from tests.support.agents import toml_agents, trust_repo, write_agent
from tests.support.cli import handoff
from tests.support.git import git, git_leftovers
from tests.support.lsp_client import Editor

CHANGED = "return a + b  # checked"
WHOLE = {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}}


@pytest.fixture
def wt(repo: Path, tmp_path: Path) -> Path:
    """A linked worktree of ``repo`` on the branch `feature`; both trust a command agent that
    edits app.py."""
    agent = write_agent(
        tmp_path / "bin",
        "edit",
        f"""
        p = pathlib.Path("app.py")
        p.write_text(p.read_text().replace("return a + b", {CHANGED!r}))
        print("checked")
    """,
    )
    (repo / ".handoff.toml").write_text(toml_agents({"edit": agent}, "edit"))
    git(repo, "add", ".handoff.toml")
    git(repo, "commit", "-qm", "handoff settings")
    tree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(tree))
    trust_repo(repo)
    trust_repo(tree)
    return tree


def run(cwd: Path) -> str:
    out = handoff(cwd, "run", "check")
    assert out.returncode == 0, out.stdout + out.stderr
    [sid] = re.findall(r"Apply: handoff apply (\S+)", out.stdout)
    return sid


def listed(cwd: Path) -> str:
    out = handoff(cwd, "ls")
    assert out.returncode == 0, out.stderr
    return out.stdout


def leftovers(repo: Path, wt: Path) -> tuple[list[str], list[str], list[str]]:
    """What Handoff left in git: worktrees besides the developer's two, branches, refs."""
    trees, branches, refs = git_leftovers(repo)
    return [t for t in trees if t != f"worktree {wt}"], branches, refs


def record(sid: str) -> dict:
    [path] = list((state_root() / "repos").glob(f"*/sessions/{sid}/record.json"))
    return json.loads(path.read_text())


def test_cli_a_linked_worktrees_session_from_the_main_checkout(repo: Path, wt: Path):
    in_wt = run(wt)
    in_main = run(repo)
    for cwd in (repo, wt):  # each side lists both
        out = listed(cwd)
        assert in_wt in out and in_main in out, out
    assert f"worktree {wt}" in listed(repo)  # and says where the other one was started

    # applying the worktree's session from the main checkout is refused, naming the worktree
    out = handoff(repo, "apply", in_wt)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    [line] = out.stderr.strip().splitlines()
    assert str(wt) in line and f"handoff apply {in_wt}" in line
    assert CHANGED not in (repo / "app.py").read_text()
    assert CHANGED not in (wt / "app.py").read_text()  # nor written elsewhere behind its back
    assert record(in_wt)["state"] == "ready"

    # gc on either side removes nothing of the other's; git's own gc loses no result
    for cwd in (repo, wt):
        out = handoff(cwd, "gc")
        assert out.returncode == 0 and out.stdout.startswith("removed 0"), out.stdout + out.stderr
    git(repo, "gc", "-q", "--prune=now")
    for sid in (in_wt, in_main):
        rec = record(sid)
        assert git(repo, "cat-file", "-t", rec["resultCommit"]).strip() == "commit"
        assert Path(rec["worktree"]).is_dir()

    # applied where it was started; the other session discarded from the other side
    out = handoff(wt, "apply", in_wt)
    assert out.returncode == 0, out.stdout + out.stderr
    assert CHANGED in (wt / "app.py").read_text()
    assert CHANGED not in (repo / "app.py").read_text()
    out = handoff(wt, "discard", in_main)
    assert out.returncode == 0, out.stdout + out.stderr
    assert record(in_main)["state"] == "discarded" and record(in_wt)["state"] == "applied"
    assert leftovers(repo, wt) == ([], [], [])
    assert CHANGED not in (repo / "app.py").read_text()


async def test_sessions_recorded_under_the_old_per_worktree_folder_are_found(
    repo: Path, wt: Path, state_dir: Path
):
    """Before, a linked worktree's sessions had a folder of their own (the key of its root): a
    ready one left there is listed from the main checkout, kept by gc, applied in wt."""
    cfg, _ = config_mod.load(wt)
    old = Store(wt)
    old.root, old.legacy = state_dir / "repos" / repo_key(wt), []  # the layout before
    mgr = SessionManager(wt, cfg, store=old)
    mgr.load()
    s = await mgr.wait(mgr.delegate(DelegateRequest("check")).id)
    assert s.state is State.READY, s.error
    await mgr.close()
    assert (state_dir / "repos" / repo_key(wt) / "sessions" / s.id / "record.json").is_file()
    assert Store(repo).root != old.root

    assert s.id in listed(repo)
    out = handoff(repo, "gc")
    assert out.returncode == 0 and out.stdout.startswith("removed 0"), out.stdout + out.stderr
    git(repo, "gc", "-q", "--prune=now")
    assert Path(s.worktree).is_dir() and git(repo, "rev-parse", f"refs/handoff/{s.id}/base")
    out = handoff(wt, "apply", s.id)
    assert out.returncode == 0, out.stdout + out.stderr
    assert CHANGED in (wt / "app.py").read_text()
    assert leftovers(repo, wt) == ([], [], []) and not Path(s.worktree).exists()
    assert record(s.id)["state"] == "applied"


@pytest.mark.parametrize("caps", ["visual_studio_code", "neovim"])
async def test_lsp_the_main_checkout_sees_a_linked_worktrees_session(caps, repo: Path, wt: Path):
    editor = await Editor.start(caps, repo)
    try:
        uri = editor.open(repo / "app.py")
        mine = (
            await editor.command(
                "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": "check"}
            )
        )["sessionId"]
        await editor.wait_state(mine, "ready")
        theirs = run(wt)  # started in the terminal, in the linked worktree, while the editor runs
        await editor.wait_state(theirs, "ready")  # the editor hears of it
        listed_ids = [
            s["id"] for s in (await editor.command("handoff.listSessions", {}))["sessions"]
        ]
        assert mine in listed_ids and theirs in listed_ids
        assert mine in listed(wt)

        out = handoff(wt, "gc")  # the other side's gc keeps the editor's session
        assert out.returncode == 0 and out.stdout.startswith("removed 0"), out.stdout
        git(repo, "gc", "-q", "--prune=now")
        assert git(repo, "cat-file", "-t", record(mine)["resultCommit"]).strip() == "commit"

        with pytest.raises(JsonRpcException, match="started in the worktree"):
            await editor.command("handoff.apply", {"sessionId": theirs})
        assert CHANGED not in (wt / "app.py").read_text()
        assert CHANGED not in editor.text(uri) and CHANGED not in (repo / "app.py").read_text()
        assert record(theirs)["state"] == "ready"

        result = await editor.command("handoff.apply", {"sessionId": mine})
        assert result["applied"] is True and CHANGED in editor.text(uri)
        await editor.command("handoff.discard", {"sessionId": theirs})
        await editor.wait_state(theirs, "discarded")
        assert record(theirs)["state"] == "discarded"
        assert CHANGED not in (wt / "app.py").read_text()
        await editor.wait_state(mine, "applied")
        assert leftovers(repo, wt) == ([], [], [])
    finally:
        await editor.stop()


async def test_lsp_opened_in_the_linked_worktree_applies_its_session_there(repo: Path, wt: Path):
    """The editor in wt sees the main checkout's session (and leaves it alone) and applies its own
    session to wt's buffers."""
    in_main = run(repo)
    editor = await Editor.start("neovim", wt)
    try:
        uri = editor.open(wt / "app.py")
        await editor.wait_state(in_main, "ready")
        sid = (
            await editor.command(
                "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": "check"}
            )
        )["sessionId"]
        s = await editor.wait_state(sid, "ready")
        assert s["repoRoot"] == str(wt) and in_main in listed(repo) and sid in listed(repo)
        out = handoff(repo, "gc")
        assert out.returncode == 0 and out.stdout.startswith("removed 0"), out.stdout
        result = await editor.command("handoff.apply", {"sessionId": sid})
        assert result["applied"] is True and CHANGED in editor.text(uri)
        assert CHANGED not in (repo / "app.py").read_text()
        assert record(in_main)["state"] == "ready"
    finally:
        await editor.stop()
    assert os.path.isdir(record(in_main)["worktree"])
