"""The warm pool, ``worktree.include`` and ``worktree.setup``, driven through the ``handoff`` CLI
and its session daemon as a developer does, in real repositories with real git."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.support.agents import toml_agents, trust_repo, write_agent
from tests.support.cli import handoff
from tests.support.git import git

# An agent that writes down what its worktree holds (every file but .git, with its content), then
# leaves work of every kind behind: a tracked change, an untracked file, an ignored file.
SEE_AND_MESS = """
seen = {}
for top, dirs, files in os.walk("."):
    dirs[:] = [d for d in dirs if d != ".git"]
    for f in files:
        p = os.path.join(top, f)[2:]
        if p == ".git":
            continue
        seen[p] = "<link>" if os.path.islink(p) else open(p, errors="replace").read()
out = pathlib.Path(os.environ["SEEN_DIR"]) / (os.environ["HANDOFF_SESSION_ID"] + ".json")
out.write_text(json.dumps({"cwd": os.getcwd(), "files": seen}))
pathlib.Path("app.py").write_text("# the agent's tracked change\\n")
pathlib.Path("untracked-by-agent.txt").write_text("untracked\\n")
pathlib.Path("agent.log").write_text("ignored\\n")
os.makedirs("cache-dir", exist_ok=True)
pathlib.Path("cache-dir/agent.log").write_text("ignored too\\n")
print("looked and left work")
"""


def pool_records(state: Path) -> list[dict]:
    found = []
    for rec in state.glob("repos/*/pool/p-*.json"):
        data = json.loads(rec.read_text())
        if data.get("state") == "ready":
            found.append({**data, "path": str(rec.with_suffix(""))})
    return found


def wait_pool(state: Path, n: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = pool_records(state)
        if len(ready) >= n:
            return ready
        time.sleep(0.05)
    raise AssertionError(f"the pool never had {n} idle worktrees: {pool_records(state)}")


def transcript(state: Path, sid: str) -> list[dict]:
    (path,) = state.glob(f"repos/*/sessions/{sid}/transcript.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def worktree_event(state: Path, sid: str) -> dict:
    return next(e for e in transcript(state, sid) if e["type"] == "worktree")


def run_ok(repo: Path, *args: str) -> str:
    res = handoff(repo, "run", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.split()[0]


def setup_repo(repo: Path, tmp_path: Path, **scalars) -> Path:
    seen = tmp_path / "seen"
    seen.mkdir()
    argv = write_agent(tmp_path / "bin", "see", SEE_AND_MESS)
    text = toml_agents({"see": argv}, "see", **scalars)
    text += f'[agents.see.env]\nSEEN_DIR = "{seen}"\n'
    (repo / ".gitignore").write_text("*.log\ncache-dir/\n")
    git(repo, "commit", "-qam", "ignore logs")
    (repo / ".handoff.toml").write_text(text)
    trust_repo(repo)
    return seen


def seen_by(seen: Path, sid: str) -> dict:
    return json.loads((seen / f"{sid}.json").read_text())


def test_pooled_worktree_never_carries_an_earlier_sessions_files(
    repo: Path, tmp_path: Path, state_dir: Path
):
    seen = setup_repo(repo, tmp_path)
    pristine = {"app.py": (repo / "app.py").read_text(), "README.md": "# sample\n"}
    first = run_ok(repo, "first")  # opens the repository: the pool is made in the background
    wait_pool(state_dir, 2)
    sids = [first]
    for i in range(4):  # takes both pooled worktrees, then the refilled ones
        sids.append(run_ok(repo, f"session {i}"))
        if i == 1:
            wait_pool(state_dir, 1)
    worktrees = set()
    for sid in sids:
        files = seen_by(seen, sid)["files"]
        assert {k: v for k, v in files.items() if k in pristine} == pristine, sid
        # nothing any earlier session left: tracked change, untracked or ignored file
        assert not {"untracked-by-agent.txt", "agent.log", "cache-dir/agent.log"} & set(files)
        assert set(files) == {"app.py", "README.md", ".gitignore", ".handoff.toml"}, files
        worktrees.add(seen_by(seen, sid)["cwd"])
    assert len(worktrees) == len(sids)  # every session in a worktree of its own
    assert [worktree_event(state_dir, sid)["pooled"] for sid in sids[1:3]] == [True, True]
    # every session still holds its own work, untouched by the later ones
    for wt in worktrees:
        assert Path(wt, "untracked-by-agent.txt").is_file() and Path(wt, "agent.log").is_file()
        assert Path(wt, "app.py").read_text() == "# the agent's tracked change\n"
    assert (repo / "app.py").read_text() == pristine["app.py"]
    assert git(repo, "status", "--porcelain") == "?? .handoff.toml\n"


def test_a_sessions_worktree_is_never_handed_out_again_also_after_a_restart(
    repo: Path, tmp_path: Path, state_dir: Path
):
    seen = setup_repo(repo, tmp_path)
    a = run_ok(repo, "holds work")
    held = Path(seen_by(seen, a)["cwd"])
    wait_pool(state_dir, 2)
    assert handoff(repo, "daemon", "stop").returncode == 0
    # a crash in the middle of making a pooled worktree: a folder without its ready record
    pool_dir = next(state_dir.glob("repos/*/pool"))
    git(repo, "worktree", "add", "-q", "--detach", str(pool_dir / "p-halfmade0000"), "HEAD")
    (pool_dir / "p-halfmade0000" / "half.txt").write_text("written before the crash\n")
    assert handoff(repo, "daemon", "status").returncode == 1

    later = [run_ok(repo, f"after restart {i}") for i in range(3)]
    for sid in later:
        info = seen_by(seen, sid)
        assert Path(info["cwd"]) != held
        assert "untracked-by-agent.txt" not in info["files"] and "half.txt" not in info["files"]
    assert not (pool_dir / "p-halfmade0000").exists()  # removed at the restart, never used
    # the first session's work is where it was, whole
    assert (held / "untracked-by-agent.txt").read_text() == "untracked\n"
    assert (held / "agent.log").read_text() == "ignored\n"
    assert (held / "app.py").read_text() == "# the agent's tracked change\n"
    show = handoff(repo, "show", a)
    assert "the agent's tracked change" in show.stdout
    # it still applies, from its own worktree's result
    assert handoff(repo, "apply", a).returncode == 0
    assert (repo / "app.py").read_text() == "# the agent's tracked change\n"


def test_a_forged_pool_record_never_hands_out_a_sessions_worktree(
    repo: Path, tmp_path: Path, state_dir: Path
):
    seen = setup_repo(repo, tmp_path)
    a = run_ok(repo, "holds work")
    held = Path(seen_by(seen, a)["cwd"])
    wait_pool(state_dir, 2)
    assert handoff(repo, "daemon", "stop").returncode == 0
    pool_dir = next(state_dir.glob("repos/*/pool"))
    for rec in pool_dir.glob("p-*.json"):  # the pool's own worktrees: gone (records dropped)
        rec.unlink()
    # the session's worktree moved into the pool folder, with a record saying it is ready
    forged = pool_dir / "p-forged000000"
    git(repo, "worktree", "move", str(held), str(forged))
    (pool_dir / "p-forged000000.json").write_text(
        json.dumps({"state": "ready", "commit": "0" * 40, "createdAt": 0, "bytes": 0})
    )
    b = run_ok(repo, "must not get it")
    info = seen_by(seen, b)
    assert "untracked-by-agent.txt" not in info["files"]
    assert info["files"]["app.py"] == (repo / "app.py").read_text()
    assert not worktree_event(state_dir, b)["pooled"]


def test_worktree_include_copies_exactly_the_matching_ignored_files(
    repo: Path, tmp_path: Path, state_dir: Path
):
    argv = write_agent(
        tmp_path / "bin",
        "inc",
        """
        seen = sorted(
            os.path.join(t, f)[2:]
            for t, d, fs in os.walk(".") if not t.startswith("./.git")
            for f in fs
            if os.path.join(t, f) != "./.git"
        )
        links = [p for p in seen if os.path.islink(p)]
        pathlib.Path(os.environ["OUT"]).write_text(json.dumps({"files": seen, "links": links}))
        pathlib.Path(".env").write_text("SECRET=changed-by-the-agent\\n")
        with open("node_modules/pkg/index.js", "a") as f:
            f.write("// agent\\n")
        print("wrote to the copies")
        """,
    )
    out = tmp_path / "seen.json"
    (repo / ".gitignore").write_text("*.log\n.env\nnode_modules/\nbuild/\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-qm", "ignores")
    (repo / ".env").write_text("SECRET=developer\n")
    (repo / "sub").mkdir()
    (repo / "sub" / ".env").write_text("SUB=1\n")
    (repo / "node_modules" / "pkg").mkdir(parents=True)
    (repo / "node_modules" / "pkg" / "index.js").write_text("module.exports = 1;\n")
    (repo / "node_modules" / "escape").symlink_to(repo / "app.py")  # into the developer's tree
    (repo / "debug.log").write_text("not included\n")
    (repo / "build").mkdir()
    (repo / "build" / "out.bin").write_bytes(b"\0not included")
    text = toml_agents({"inc": argv}, "inc")
    text += f'[agents.inc.env]\nOUT = "{out}"\n[worktree]\ninclude = [".env", "node_modules/"]\n'
    (repo / ".handoff.toml").write_text(text)

    # untrusted, the repository's file runs nothing (and says why)
    res = handoff(repo, "run", "untrusted")
    assert res.returncode != 0 and "handoff trust" in res.stdout + res.stderr
    trust_repo(repo)
    sid = run_ok(repo, "with includes")
    seen = json.loads(out.read_text())
    assert set(seen["files"]) == {
        ".gitignore",
        ".handoff.toml",
        "README.md",
        "app.py",
        ".env",
        "sub/.env",
        "node_modules/pkg/index.js",
    }
    assert seen["links"] == []  # the link into the developer's tree was not copied
    assert worktree_event(state_dir, sid)["included"] == [".env", "node_modules/", "sub/.env"]
    # the agent's writes stayed in its copies
    assert (repo / ".env").read_text() == "SECRET=developer\n"
    assert (repo / "node_modules" / "pkg" / "index.js").read_text() == "module.exports = 1;\n"
    wt = next(state_dir.glob(f"repos/*/worktrees/{sid}"))
    assert (wt / ".env").read_text() == "SECRET=changed-by-the-agent\n"
    assert os.stat(wt / ".env").st_ino != os.stat(repo / ".env").st_ino
    assert os.stat(repo / ".env").st_nlink == 1
    # ignored files are not part of the result
    assert ".env" not in handoff(repo, "show", sid).stdout.split("diff --git")[-1]


def test_worktree_setup_runs_before_the_agent_and_its_failure_fails_the_session(
    repo: Path, tmp_path: Path, state_dir: Path
):
    marker = tmp_path / "agent-ran"
    argv = write_agent(
        tmp_path / "bin",
        "check",
        f"""
        pathlib.Path({str(marker)!r}).write_text(pathlib.Path(".setup-done").read_text())
        print("setup was there")
        """,
    )

    def configure(setup: str) -> None:
        text = toml_agents({"check": argv}, "check")
        text += f"[worktree]\nsetup = {json.dumps(setup)}\n"
        (repo / ".handoff.toml").write_text(text)
        trust_repo(repo)

    (repo / ".gitignore").write_text("*.log\n.setup-done\n")
    git(repo, "commit", "-qam", "ignore")
    configure("echo prepared > .setup-done && echo setup says hello")
    sid = run_ok(repo, "needs setup")
    assert marker.read_text() == "prepared\n"
    events = transcript(state_dir, sid)
    kinds = [e["type"] for e in events]
    assert kinds.index("setup") < kinds.index("start")
    setup = next(e for e in events if e["type"] == "setup")
    assert setup["exitCode"] == 0 and "setup says hello" in setup["output"]

    marker.unlink()
    configure("echo the setup broke >&2; exit 3")
    res = handoff(repo, "run", "setup fails")
    assert res.returncode != 0
    sid = res.stdout.split()[0]
    assert not marker.exists()  # the agent never started
    s = json.loads(next(state_dir.glob(f"repos/*/sessions/{sid}/record.json")).read_text())
    assert s["state"] == "failed"
    assert s["error"].startswith("worktree.setup `echo the setup broke >&2; exit 3` failed")
    assert "exit code 3" in s["error"] and "the setup broke" in s["error"]
    assert "the setup broke" in res.stdout + res.stderr
    setup = next(e for e in transcript(state_dir, sid) if e["type"] == "setup")
    assert setup["exitCode"] == 3 and "the setup broke" in setup["output"]


def test_pool_in_daemon_status_worktree_list_and_gc(repo: Path, tmp_path: Path, state_dir: Path):
    setup_repo(repo, tmp_path)
    sid = run_ok(repo, "opens the repository")
    ready = wait_pool(state_dir, 2)
    status = handoff(repo, "daemon", "status")
    assert status.returncode == 0
    assert "pool: 2 idle worktree(s)" in status.stdout
    assert f"repository: {repo}  (pool: 2 idle worktree(s)," in status.stdout
    assert all(r["bytes"] > 0 for r in ready)
    # what the developer's `git worktree list` shows: their tree, the session's worktree on its
    # branch, and the idle pooled worktrees (detached, under the state folder's pool/)
    listing = git(repo, "worktree", "list", "--porcelain").split("\n\n")
    pooled = [b for b in listing if "/pool/p-" in b]
    assert len(pooled) == 2 and all("\ndetached" in b for b in pooled)
    assert sum(f"branch refs/heads/handoff/{sid}" in b for b in listing) == 1
    # each idle one's index is split, its shared index in its own admin folder (gitops.refresh_index)
    admins = [Path(git(Path(r["path"]), "rev-parse", "--absolute-git-dir").strip()) for r in ready]
    for admin, r in zip(admins, ready, strict=True):
        shared = git(Path(r["path"]), "rev-parse", "--shared-index-path").strip()
        assert shared and Path(r["path"], shared).resolve().parent == admin.resolve()

    gc = handoff(repo, "gc")
    assert gc.returncode == 0, gc.stderr
    assert "removed 2 idle pooled worktree(s)" in gc.stdout
    assert pool_records(state_dir) == []
    assert not [
        b for b in git(repo, "worktree", "list", "--porcelain").split("\n\n") if "/pool/" in b
    ]
    assert not list(next(state_dir.glob("repos/*/pool")).iterdir())
    assert not any(a.exists() for a in admins)  # their shared indexes went with them
    # the session's own worktree is kept (it still holds work)
    assert next(state_dir.glob(f"repos/*/worktrees/{sid}")).is_dir()
    assert "pool: 0 idle worktree(s)" in handoff(repo, "daemon", "status").stdout


def test_pool_size_zero_makes_no_pooled_worktrees(repo: Path, tmp_path: Path, state_dir: Path):
    (tmp_path / "x").mkdir()
    seen = setup_repo(repo, tmp_path)
    with open(repo / ".handoff.toml", "a") as f:
        f.write("[pool]\nsize = 0\n")
    trust_repo(repo)
    sid = run_ok(repo, "no pool")
    time.sleep(0.5)
    assert pool_records(state_dir) == []
    assert not worktree_event(state_dir, sid)["pooled"]
    assert seen_by(seen, sid)["files"]["app.py"] == (repo / "app.py").read_text()


# Looks (its worktree's files and `git status`), then changes one file without changing its
# size, in the same second as its checkout: git's racy-file check must still see that change.
LOOK_AND_EDIT_IN_PLACE = """
import subprocess
seen = {}
for top, dirs, files in os.walk("."):
    dirs[:] = [d for d in dirs if d != ".git"]
    for f in files:
        p = os.path.join(top, f)[2:]
        if p != ".git":
            seen[p] = open(p, errors="replace").read()
status = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout
out = pathlib.Path(os.environ["SEEN_DIR"]) / (os.environ["HANDOFF_SESSION_ID"] + ".json")
out.write_text(json.dumps({"cwd": os.getcwd(), "files": seen, "status": status}))
pathlib.Path("lib/f007.txt").write_text("line Y007\\n")  # was "line x007\\n"
print("looked, edited in place")
"""


def test_cold_handoff_checks_out_beside_the_snapshot(repo: Path, tmp_path: Path, state_dir: Path):
    """pool.size = 0: the worktree's checkout of HEAD runs while the snapshot is taken, then moves
    to the snapshot; the agent sees exactly what the developer sees, in a clean worktree, and
    the developer's index is not touched."""
    seen = tmp_path / "seen"
    seen.mkdir()
    argv = write_agent(tmp_path / "bin", "look", LOOK_AND_EDIT_IN_PLACE)
    text = toml_agents({"look": argv}, "look") + f'[agents.look.env]\nSEEN_DIR = "{seen}"\n'
    (repo / "lib").mkdir()
    for i in range(300):  # over git's threshold for a parallel checkout (100 files)
        (repo / f"lib/f{i:03}.txt").write_text(f"line x{i:03}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "many files")
    (repo / ".handoff.toml").write_text(text + "[pool]\nsize = 0\n")
    trust_repo(repo)
    # the developer's work: unstaged, staged, untracked and ignored
    (repo / "app.py").write_text("# unstaged work\n")
    (repo / "README.md").write_text("# staged work\n")
    git(repo, "add", "README.md")
    (repo / "README.md").write_text("# staged, then changed again\n")
    (repo / "lib/f001.txt").unlink()
    (repo / "new.py").write_text("# untracked\n")
    (repo / "debug.log").write_text("ignored\n")
    git(repo, "status")  # the developer's own refresh; from here on the index must not change
    index = (repo / ".git/index").read_bytes()

    sid = run_ok(repo, "cold")
    event = worktree_event(state_dir, sid)
    assert event["early"] and not event["pooled"]
    info = seen_by(seen, sid)
    assert info["status"] == ""  # the worktree is clean at the snapshot, its index true
    files = info["files"]
    assert files["app.py"] == "# unstaged work\n"
    assert files["README.md"] == "# staged, then changed again\n"
    assert files["new.py"] == "# untracked\n"
    assert "lib/f001.txt" not in files and "debug.log" not in files
    assert files["lib/f299.txt"] == "line x299\n"
    lib = {f"lib/f{i:03}.txt" for i in range(300)} - {"lib/f001.txt"}
    assert set(files) == lib | {"app.py", "README.md", ".gitignore", "new.py", ".handoff.toml"}
    # the same-size edit made right after the checkout is in the result
    diff = handoff(repo, "show", sid).stdout
    assert "-line x007" in diff and "+line Y007" in diff
    assert (repo / ".git/index").read_bytes() == index
    assert (repo / "lib/f007.txt").read_text() == "line x007\n"
    # nothing left in the pool's folder, the session's worktree on its branch
    assert not [p for p in next(state_dir.glob("repos/*/pool")).iterdir()]
    assert git(Path(info["cwd"]), "branch", "--show-current").strip() == f"handoff/{sid}"


def test_a_pooled_worktree_written_into_is_pristine_when_taken(
    repo: Path, tmp_path: Path, state_dir: Path
):
    """Whatever wrote into an idle pooled worktree (a tracked file changed, untracked and ignored
    files left), the session that takes it sees none of it."""
    seen = setup_repo(repo, tmp_path)
    first = run_ok(repo, "first")
    pristine = dict(seen_by(seen, first)["files"])
    for rec in wait_pool(state_dir, 2):
        wt = Path(rec["path"])
        (wt / "app.py").write_text("# tampered\n")
        (wt / "stray.txt").write_text("untracked\n")
        (wt / "stray.log").write_text("ignored\n")
    sid = run_ok(repo, "second")
    assert worktree_event(state_dir, sid)["pooled"]
    assert seen_by(seen, sid)["files"] == pristine


@pytest.mark.parametrize("restart", [False, True], ids=["watched", "after-restart"])
def test_a_pooled_worktree_written_deep_inside_is_pristine_when_taken(
    repo: Path, tmp_path: Path, state_dir: Path, restart: bool
):
    """Files made in a folder below the top, a folder made there, a tracked file changed in
    place there: the pool's watch of the worktree sees each; after a restart of the daemon
    (which loses the watches), the take's check of the folders' stamps and the index's stat
    data does."""
    (repo / "pkg" / "sub").mkdir(parents=True)
    (repo / "pkg" / "sub" / "deep.py").write_text("DEEP = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a deep file")
    seen = setup_repo(repo, tmp_path)
    first = run_ok(repo, "first")
    pristine = dict(seen_by(seen, first)["files"])
    tampered = wait_pool(state_dir, 2)
    one, other = (Path(rec["path"]) for rec in tampered)
    (one / "pkg" / "sub" / "stray.txt").write_text("untracked, deep\n")
    (one / "pkg" / "sub" / "made").mkdir()
    (one / "pkg" / "sub" / "made" / "x.log").write_text("ignored, deeper\n")
    with open(other / "pkg" / "sub" / "deep.py", "r+") as f:  # same inode, folder untouched
        f.write("DEEP = 2\n")
    if restart:
        assert handoff(repo, "daemon", "stop").returncode == 0
    for name in ("second", "third"):
        sid = run_ok(repo, name)
        assert worktree_event(state_dir, sid)["pooled"]
        assert seen_by(seen, sid)["files"] == pristine
