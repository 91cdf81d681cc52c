"""The fault matrix (issue 5, agent side): every fault ends in a defined session state with a
clear message, and the developer's files, index, stash and branches stay byte-identical
except for results they applied.

Models are reached through litellm over real HTTP on 127.0.0.1 (a scripted server with a few
fault items added here); agents are real processes; disks fill up for real (a small tmpfs:
writes fail with ENOSPC).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from handoff.agent.backends import builtin as builtin_mod
from handoff.agent.backends import model as model_mod
from handoff.agent.config import Config
from handoff.agent.manager import DelegateRequest, SessionError, SessionManager
from handoff.agent.session import State
from handoff.offline_model import ScriptedModel, _Handler

from tests.support.agents import command_manager, processes_with, write_agent
from tests.support.dev_state import assert_untouched, dev_state, files_of, no_session_leftovers
from tests.support.git import git

API_KEY = "sk-fault-matrix-0123456789"


# -- a scripted model with faults ---------------------------------------------------------


class FaultyModel(ScriptedModel):
    """Adds script items ``{"hang": seconds}`` (accept, say nothing, close) and
    ``{"endless": True}`` (a 200 reply whose body never ends)."""

    def __init__(self) -> None:
        super().__init__()
        self.stopping = threading.Event()

    def start(self) -> FaultyModel:
        handler = type("Handler", (_FaultHandler,), {"model": self})
        from http.server import ThreadingHTTPServer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        super().stop()


class _FaultHandler(_Handler):
    model: FaultyModel

    def do_POST(self) -> None:
        with self.model._lock:
            head = self.model.script[0] if self.model.script else {}
        if "hang" not in head and "endless" not in head:
            return super().do_POST()
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.model.next_item(json.loads(raw or b"{}"))
        if "hang" in head:
            self.model.stopping.wait(head["hang"])
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(10**9))
        self.end_headers()
        deadline = time.monotonic() + 60  # bounded, whatever the client does
        try:
            self.wfile.write(b'{"id": "chatcmpl-endless", "choices": [')
            while time.monotonic() < deadline and not self.model.stopping.wait(0.1):
                self.wfile.write(b" ")
                self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True


@pytest.fixture(scope="module")
def litellm_ready() -> None:
    model_mod.import_litellm()


@pytest.fixture
def model(litellm_ready: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyModel]:
    monkeypatch.setattr(model_mod, "BACKOFF_BASE_S", 0.01)  # retries without the long waits
    with FaultyModel() as m:
        yield m


def builtin_manager(repo: Path, api_base: str, **cfg: Any) -> SessionManager:
    config = Config(model="openai/scripted-model", apiBase=api_base, apiKey=API_KEY, **cfg)
    mgr = SessionManager(repo, config)
    mgr.load()
    return mgr


async def run(mgr: SessionManager, instruction: str = "do the task", **kw: Any):
    return await mgr.wait(mgr.delegate(DelegateRequest(instruction, **kw)).id)


def finish(summary: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "finish", "arguments": {"summary": summary}}]}


# -- model faults -------------------------------------------------------------------------

CONTEXT_EXCEEDED = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 412345 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}

MODEL_FAULTS = {
    # name: (script, config, end state, message part, requests made)
    "429 retried": (
        [{"status": 429, "headers": {"Retry-After": "0"}}, finish("ok after 429")],
        {},
        State.READY,
        "ok after 429",
        2,
    ),
    "500 retried": ([{"status": 500}, finish("ok after 500")], {}, State.READY, "ok after 500", 2),
    "500 for good": (
        [{"status": 500}] * 4,
        {},
        State.FAILED,
        "the model is unavailable after 4 attempts",
        4,
    ),
    "request timeout retried": (
        [{"hang": 5}, finish("ok after a timeout")],
        {},
        State.READY,
        "ok after a timeout",
        2,
    ),
    "model hangs for good": (
        [{"hang": 30}] * 6,
        {"timeoutS": 2.5},
        State.FAILED,
        "time limit reached (timeoutS = 2.5)",
        None,
    ),
    "endless stream": (
        [{"endless": True}],
        {"timeoutS": 2.0},
        State.FAILED,
        "time limit reached (timeoutS = 2)",
        1,
    ),
    "context exceeded": (
        [{"status": 400, "body": CONTEXT_EXCEEDED}],
        {},
        State.FAILED,
        "no longer fits the model's context window",
        1,
    ),
    "malformed arguments": (
        [
            {"tool_calls": [{"name": "write_file", "arguments": '{"path": "a.txt", '}]},
            {
                "tool_calls": [
                    {"name": "write_file", "arguments": {"path": "a.txt", "content": "ok\n"}}
                ]
            },
            finish("recovered"),
        ],
        {},
        State.READY,
        "recovered",
        3,
    ),
    "unknown tool": (
        [{"tool_calls": [{"name": "rm_rf", "arguments": {"path": "/"}}]}, finish("recovered")],
        {},
        State.READY,
        "recovered",
        2,
    ),
    "empty replies": ([{"content": ""}] * 3, {}, State.FAILED, "unusable output", 3),
    "garbage for good": (
        [
            {"tool_calls": [{"name": "write_file", "arguments": "{{{"}]},
            {"tool_calls": [{"name": "nope", "arguments": {}}]},
            {"content": None},
        ],
        {},
        State.FAILED,
        "unusable output",
        3,
    ),
}


@pytest.mark.parametrize("fault", list(MODEL_FAULTS))
async def test_model_fault(
    fault: str, repo: Path, model: FaultyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    script, cfg, state, message, requests = MODEL_FAULTS[fault]
    monkeypatch.setattr(builtin_mod, "REQUEST_TIMEOUT_S", 1.0)  # our constant, not litellm's
    for item in script:
        model.add(item)
    (repo / "app.py").write_text((repo / "app.py").read_text() + "# unsaved-looking work\n")
    before = dev_state(repo)
    mgr = builtin_manager(repo, model.url, **cfg)
    started = time.monotonic()
    s = await run(mgr)
    assert s.state is state, s.error
    assert message in (s.summary if state is State.READY else s.error or "")
    if requests is not None:
        assert len(model.requests) == requests
    assert time.monotonic() - started < 20
    assert API_KEY not in json.dumps(s.to_wire())
    # the record on disk says the same, and the transcript ends the run
    stored = mgr.store.load(s.id)
    assert stored is not None and stored.state is state and stored.error == s.error
    assert mgr.store.read_transcript(s.id)[0]["type"] == "start"
    if fault in ("malformed arguments", "unknown tool"):
        sent = [m["content"] for m in model.requests[1]["messages"] if m["role"] == "tool"]
        assert sent and sent[0].startswith("error:")
    assert_untouched(repo, before)
    mgr.discard(s.id)
    no_session_leftovers(repo)
    assert_untouched(repo, before)


async def test_model_connection_refused(
    repo: Path, litellm_ready: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_mod, "BACKOFF_BASE_S", 0.01)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    before = dev_state(repo)
    mgr = builtin_manager(repo, f"http://127.0.0.1:{port}/v1")
    s = await run(mgr)
    assert s.state is State.FAILED
    assert "the model is unavailable after 4 attempts" in s.error
    assert "onnect" in s.error  # "Connection error" / "connection refused", as litellm words it
    assert_untouched(repo, before)


# -- command agent faults -----------------------------------------------------------------


async def test_command_agent_killed_by_a_signal(repo: Path, tmp_path: Path) -> None:
    argv = write_agent(
        tmp_path / "bin",
        "crash",
        """
        pathlib.Path("half.txt").write_text("half")
        print("about to crash", file=sys.stderr, flush=True)
        import signal
        os.kill(os.getpid(), signal.SIGSEGV)
    """,
    )
    mgr = command_manager(repo, {"crash": argv}, "crash")
    before = dev_state(repo)
    s = await run(mgr)
    assert s.state is State.FAILED
    assert "was killed by SIGSEGV" in s.error and "about to crash" in s.error
    # what it left is kept for a look (handoff show), not applied
    assert s.filesChanged == [(repo / "half.txt").as_uri()]
    assert_untouched(repo, before)
    mgr.discard(s.id)
    no_session_leftovers(repo)


async def test_command_agent_hang_hits_the_time_limit(repo: Path, tmp_path: Path) -> None:
    mark = f"300.{os.getpid()}"
    argv = write_agent(
        tmp_path / "bin",
        "hang",
        f"""
        import subprocess
        subprocess.Popen(["sleep", "{mark}"])
        time.sleep(300)
    """,
    )
    mgr = command_manager(repo, {"hang": argv}, "hang", timeoutS=1.5)
    before = dev_state(repo)
    started = time.monotonic()
    s = await run(mgr)
    assert time.monotonic() - started < 15
    assert s.state is State.FAILED
    assert "time limit reached (timeoutS = 1.5)" in s.error
    with anyio.fail_after(5):
        while processes_with(mark):
            await anyio.sleep(0.05)
    assert_untouched(repo, before)


async def test_command_agent_huge_output_is_capped(repo: Path, tmp_path: Path) -> None:
    argv = write_agent(
        tmp_path / "bin",
        "loud",
        """
        chunk = b"x" * (1 << 20)
        for _ in range(50):  # 50 MB on stdout, in one endless line
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.write(b"\\nwrote a lot\\n")
        sys.stderr.buffer.write(b"e" * (5 << 20))
        pathlib.Path("out.txt").write_text("done\\n")
    """,
    )
    mgr = command_manager(repo, {"loud": argv}, "loud")
    s = await run(mgr)
    assert s.state is State.READY, s.error
    assert s.summary == "wrote a lot"
    transcript = mgr.store.session_dir(s.id) / "transcript.jsonl"
    assert transcript.stat().st_size < 400_000  # 64 KiB kept of each stream, and some JSON
    exit_event = [e for e in mgr.store.read_transcript(s.id) if e["type"] == "command_exit"][0]
    assert "bytes left out" in exit_event["stdout"] and "bytes left out" in exit_event["stderr"]
    assert len(json.dumps(s.to_wire())) < 10_000


# -- disk faults: a real full disk (a small tmpfs), ENOSPC as a user would meet it ------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Any]:
    """``make(name, size)`` mounts a tmpfs of ``size`` at ``tmp_path/name`` (needs root)."""
    mounts: list[Path] = []

    def make(name: str, size: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounts.append(point)
        return point

    yield make
    for point in reversed(mounts):
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """Take all but ``leave`` bytes of the free space of ``folder``'s file system."""
    st = os.statvfs(folder)
    filler = folder / "filler.bin"
    with open(filler, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def make_repo(root: Path) -> Path:
    git(root, "init", "-q", "-b", "main")
    (root / "app.py").write_text(
        "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
    )
    (root / ".gitignore").write_text("filler.bin\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def handoff_cli(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "handoff.agent.cli", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


QUICK_AGENT = """
    p = pathlib.Path("app.py")
    p.write_text(p.read_text().replace("return a - b", "return a - b  # agent"))
    print("edited")
"""


async def test_disk_full_during_snapshot(small_disk: Any, tmp_path: Path) -> None:
    repo = make_repo(small_disk("repo", "4m"))
    argv = write_agent(tmp_path / "bin", "quick", QUICK_AGENT)
    mgr = command_manager(repo, {"quick": argv}, "quick")
    (repo / "big.bin").write_bytes(os.urandom(400_000))  # untracked: the snapshot must store it
    fill(repo, 100_000)
    before = dev_state(repo)
    s = await run(mgr)
    assert s.state is State.FAILED
    assert s.error.startswith(f"could not snapshot the working tree of {repo}: ")
    assert "No space left on device" in s.error
    assert not Path(s.worktree).exists()
    assert_untouched(repo, before)
    mgr.discard(s.id)
    no_session_leftovers(repo)
    assert_untouched(repo, before)


async def test_disk_full_during_worktree_creation(
    small_disk: Any, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDOFF_STATE_DIR", str(small_disk("state", "256k")))
    (repo / "big.bin").write_bytes(os.urandom(400_000))
    git(repo, "add", "big.bin")
    git(repo, "commit", "-q", "-m", "big file")
    argv = write_agent(tmp_path / "bin", "quick", QUICK_AGENT)
    mgr = command_manager(repo, {"quick": argv}, "quick")
    before = dev_state(repo)
    s = await run(mgr)
    assert s.state is State.FAILED
    # git's own words, from whichever step of the checkout met the full disk (the worktree is
    # made with --no-checkout, then checked out by `git reset --hard` in it: eb7b6d4)
    assert s.error.startswith(("git worktree failed in ", "git reset failed in "))
    assert "unable to write file" in s.error
    assert f"(is the disk holding {Path(s.worktree).parent} full? " in s.error
    assert mgr.store.load(s.id).state is State.FAILED  # the record was saved all the same
    assert_untouched(repo, before)
    proc = handoff_cli(repo, "discard", s.id)
    assert proc.returncode == 0, proc.stderr
    assert not Path(s.worktree).exists()
    no_session_leftovers(repo)
    assert_untouched(repo, before)


async def test_disk_full_during_apply_changes_nothing(small_disk: Any, tmp_path: Path) -> None:
    repo = make_repo(small_disk("repo", "4m"))
    argv = write_agent(
        tmp_path / "bin",
        "two",
        QUICK_AGENT
        + """
    pathlib.Path("data.bin").write_bytes(os.urandom(400_000))
""",
    )
    mgr = command_manager(repo, {"two": argv}, "two")
    s = await run(mgr)
    assert s.state is State.READY, s.error
    filler = fill(repo, 100_000)
    before = dev_state(repo)
    with pytest.raises(SessionError) as info:
        mgr.apply_to_disk(s.id)
    assert str(info.value) == (
        f"could not apply session {s.id}: writing data.bin failed "
        "(No space left on device); nothing was changed"
    )
    assert_untouched(repo, before)  # app.py came first and is not half-applied either
    assert not list(repo.glob(".*.handoff-tmp"))
    assert mgr.get(s.id).state is State.READY  # still there to apply when the disk has room
    proc = handoff_cli(repo, "apply", s.id)  # the same from the terminal
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"handoff: could not apply session {s.id}: writing data.bin")
    assert_untouched(repo, before)
    filler.unlink()
    proc = handoff_cli(repo, "apply", s.id)
    assert proc.returncode == 0, proc.stderr
    assert "return a - b  # agent" in (repo / "app.py").read_text()
    assert (repo / "data.bin").stat().st_size == 400_000
    no_session_leftovers(repo)


# -- repository faults ----------------------------------------------------------------------


def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "f.txt").write_text("x\n")
    proc = handoff_cli(plain, "run", "do it")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"handoff: not a git repository: {plain}"
    assert files_of(plain) == {"f.txt": b"x\n"}


async def test_not_a_repository_through_the_manager(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    mgr = SessionManager(plain, Config(agent="builtin", model="openai/scripted"))
    s = await run(mgr)
    assert s.state is State.FAILED and s.error == f"not a git repository: {plain}"
    assert sorted(p.name for p in plain.iterdir()) == []


async def test_repository_without_commits(tmp_path: Path) -> None:
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "app.py").write_text("def sub(a, b):\n    return a - b\n")
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    argv = write_agent(tmp_path / "bin", "quick", QUICK_AGENT)
    mgr = command_manager(repo, {"quick": argv}, "quick")
    before = dev_state(repo)
    assert before["head"][0] == ""  # no commit yet
    s = await run(mgr)
    assert s.state is State.READY, s.error
    assert_untouched(repo, before)
    report = mgr.apply_to_disk(s.id)
    assert report.written == ["app.py"]
    new = b"def sub(a, b):\n    return a - b  # agent\n"
    assert_untouched(repo, before, applied={"app.py": new})
    no_session_leftovers(repo)


async def test_detached_head(repo: Path, tmp_path: Path) -> None:
    git(repo, "checkout", "-q", "--detach")
    argv = write_agent(tmp_path / "bin", "quick", QUICK_AGENT)
    mgr = command_manager(repo, {"quick": argv}, "quick")
    before = dev_state(repo)
    s = await run(mgr)
    assert s.state is State.READY, s.error
    mgr.apply_to_disk(s.id)
    applied = {"app.py": (repo / "app.py").read_bytes()}
    assert b"# agent" in applied["app.py"]
    assert_untouched(repo, before, applied)
    assert git(repo, "symbolic-ref", "-q", "HEAD", check=False) == ""  # still detached
    no_session_leftovers(repo)


WAITING_AGENT = """
    go = pathlib.Path(sys.argv[1])
    pathlib.Path(str(go) + ".started").write_text("1")
    deadline = time.time() + 60
    while not go.exists() and time.time() < deadline:
        time.sleep(0.02)
    p = pathlib.Path("app.py")
    p.write_text(p.read_text().replace("return a - b", "return a - b  # agent"))
    print("edited sub")
"""


async def wait_started(go: Path) -> None:
    with anyio.fail_after(30):
        while not Path(str(go) + ".started").exists():
            await anyio.sleep(0.02)


async def test_developer_commits_and_switches_branch_mid_session(
    repo: Path, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    argv = write_agent(tmp_path / "bin", "waiting", WAITING_AGENT) + [str(go)]
    mgr = command_manager(repo, {"waiting": argv}, "waiting")
    s = mgr.delegate(DelegateRequest("edit sub"))
    await wait_started(go)
    # meanwhile: a commit on main, then a new branch with other work on the same file
    (repo / "README.md").write_text("# sample\n\nmore\n")
    git(repo, "commit", "-q", "-am", "docs")
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "app.py").write_text(
        (repo / "app.py").read_text().replace("def add(a, b):", "def add(a: int, b: int):")
    )
    git(repo, "commit", "-q", "-am", "typed add")
    (repo / "app.py").write_text("# uncommitted on feature\n" + (repo / "app.py").read_text())
    go.write_text("go")
    s = await mgr.wait(s.id)
    assert s.state is State.READY, s.error
    before = dev_state(repo)
    report = mgr.apply_to_disk(s.id)
    assert report.written == ["app.py"] and not report.conflicts, (
        report,
        s.filesChanged,
        mgr.diff(s.id),
    )
    merged = (repo / "app.py").read_bytes()
    assert merged == (
        b"# uncommitted on feature\ndef add(a: int, b: int):\n    return a + b\n\n\n"
        b"def sub(a, b):\n    return a - b  # agent\n"
    )
    assert_untouched(repo, before, {"app.py": merged})
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == "feature"
    no_session_leftovers(repo)


async def test_worktree_deleted_while_the_agent_runs(repo: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    argv = write_agent(tmp_path / "bin", "waiting", WAITING_AGENT) + [str(go)]
    mgr = command_manager(repo, {"waiting": argv}, "waiting")
    before = dev_state(repo)
    s = mgr.delegate(DelegateRequest("edit sub"))
    await wait_started(go)
    shutil.rmtree(s.worktree)
    go.write_text("go")
    s = await mgr.wait(s.id)
    assert s.state is State.FAILED
    assert s.error == (
        f"the session's worktree {s.worktree} was deleted while the agent ran; there "
        "is no result to collect (discard the session to clean up)"
    )
    with pytest.raises(SessionError, match="its worktree is gone, start a new session"):
        mgr.follow_up(s.id, "again")
    mgr.discard(s.id)
    assert mgr.get(s.id).state is State.DISCARDED
    no_session_leftovers(repo)
    assert_untouched(repo, before)


async def test_worktree_deleted_after_the_result(repo: Path, tmp_path: Path) -> None:
    argv = write_agent(tmp_path / "bin", "quick", QUICK_AGENT)
    mgr = command_manager(repo, {"quick": argv}, "quick")
    first, second = await run(mgr), await run(mgr)
    shutil.rmtree(first.worktree)
    shutil.rmtree(second.worktree)
    before = dev_state(repo)
    # the result lives in git, not in the folder: apply still works, and cleans up
    mgr.apply_to_disk(first.id)
    assert_untouched(repo, before, {"app.py": (repo / "app.py").read_bytes()})
    assert b"# agent" in (repo / "app.py").read_bytes()
    mgr.discard(second.id)
    no_session_leftovers(repo)


@pytest.mark.parametrize("how", ["deleted", "renamed"])
async def test_target_file_deleted_or_renamed_before_apply(
    repo: Path, tmp_path: Path, how: str
) -> None:
    argv = write_agent(tmp_path / "bin", "quick", QUICK_AGENT)
    mgr = command_manager(repo, {"quick": argv}, "quick")
    s = await run(mgr)
    assert s.state is State.READY
    if how == "deleted":
        (repo / "app.py").unlink()
    else:
        (repo / "app.py").rename(repo / "calc.py")
    before = dev_state(repo)
    report = mgr.apply_to_disk(s.id)
    assert report.written == []
    [conflict] = report.conflicts
    assert conflict.path == "app.py"
    assert conflict.reason == "The agent changed app.py, but it was deleted meanwhile."
    assert mgr.get(s.id).state is State.READY and mgr.get(s.id).conflicts == 1
    assert_untouched(repo, before)
    proc = handoff_cli(repo, "apply", s.id)
    assert proc.returncode == 1
    assert "conflict app.py" in proc.stdout and "deleted meanwhile" in proc.stdout
    assert_untouched(repo, before)
    mgr.discard(s.id)
    no_session_leftovers(repo)


async def test_two_sessions_on_one_file_applied_one_after_the_other(
    repo: Path, tmp_path: Path
) -> None:
    add = write_agent(
        tmp_path / "bin",
        "add",
        """
        p = pathlib.Path("app.py")
        p.write_text(p.read_text().replace("return a + b", "return a + b  # first"))
        print("first")
    """,
    )
    sub = write_agent(
        tmp_path / "bin",
        "sub",
        """
        p = pathlib.Path("app.py")
        p.write_text(p.read_text().replace("return a - b", "return a - b  # second"))
        print("second")
    """,
    )
    same = write_agent(
        tmp_path / "bin",
        "same",
        """
        p = pathlib.Path("app.py")
        p.write_text(p.read_text().replace("return a + b", "return b + a"))
        print("third")
    """,
    )
    mgr = command_manager(repo, {"add": add, "sub": sub, "same": same}, "add")
    one, two, three = (
        await run(mgr, agent="add"),
        await run(mgr, agent="sub"),
        await run(mgr, agent="same"),
    )
    before = dev_state(repo)
    assert not mgr.apply_to_disk(one.id).conflicts
    assert not mgr.apply_to_disk(two.id).conflicts
    text = (repo / "app.py").read_bytes()
    assert text == (
        b"def add(a, b):\n    return a + b  # first\n\n\n"
        b"def sub(a, b):\n    return a - b  # second\n"
    )
    report = mgr.apply_to_disk(three.id)  # the same line as the first: a conflict, nothing written
    assert [fm.path for fm in report.conflicts] == ["app.py"]
    assert (repo / "app.py").read_bytes() == text
    assert_untouched(repo, before, {"app.py": text})
    mgr.discard(three.id)
    no_session_leftovers(repo)


async def test_agent_replacing_the_worktree_link_is_caught(repo: Path, tmp_path: Path) -> None:
    """A command agent (unconfined by design) points the worktree's .git at the developer's
    repository: git must never run through it, or `add -A` would rewrite their index."""
    argv = write_agent(
        tmp_path / "bin",
        "forger",
        f"""
        pathlib.Path("app.py").write_text("forged\\n")
        pathlib.Path(".git").write_text("gitdir: {repo / ".git"}\\n")
        print("forged")
    """,
    )
    mgr = command_manager(repo, {"forger": argv}, "forger")
    before = dev_state(repo)
    s = await run(mgr)
    assert s.state is State.FAILED
    assert "was tampered with: its .git points somewhere else" in s.error
    assert_untouched(repo, before)
    mgr.discard(s.id)
    assert not Path(s.worktree).exists()
    no_session_leftovers(repo)
    assert_untouched(repo, before)
