"""The session daemon: sessions outlive the editor, every editor and the terminal see the same
ones, and a daemon that dies loses nothing of the developer's (real processes only: handoff-lsp
over stdio, the CLI as typed, real git)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from handoff.agent import protocol
from handoff.agent.client import DaemonClient, DaemonUnavailable, status, stop_daemon
from lsprotocol import types

from tests.support.cli import handoff
from tests.support.lsp_agents import Agent
from tests.support.lsp_client import Editor

APP = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
DOC = '    """a minus b"""\n    return a - b'


def daemon_pid(state_dir: Path) -> int:
    return int((state_dir / "daemon" / "daemon.pid").read_text())


def wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"process {pid} still there"
        time.sleep(0.05)


async def delegate_sub(editor: Editor, uri: str) -> str:
    result = await editor.command(
        "handoff.delegate",
        {
            "uri": uri,
            "range": {"start": {"line": 5, "character": 0}, "end": {"line": 5, "character": 16}},
            "instruction": "Document what sub returns.",
        },
    )
    return result["sessionId"]


async def test_sessions_outlive_the_editor(caps, agent: Agent, repo: Path, state_dir: Path):
    agent.configure(
        runs=[[["replace", "app.py", "    return a - b", DOC]]], wait=True, summary="documented"
    )
    a = await Editor.start(caps, repo)
    uri = a.open(repo / "app.py")
    sid = await delegate_sub(a, uri)
    await a.wait_for(lambda: agent.started(sid), "the agent to start")
    await a.stop()  # the editor closes while the agent works

    agent.release(sid)
    deadline = time.monotonic() + 60
    while (st := status(state_dir)) is None or st["sessions"].get("ready") != 1:
        assert time.monotonic() < deadline, st
        await asyncio.sleep(0.05)
    assert st["clients"] == []  # nobody attached: it finished all the same

    b = await Editor.start(caps, repo)
    try:
        uri = b.open(repo / "app.py")
        ready = await b.wait_state(sid, "ready")
        assert (
            ready["summary"] == "documented"
            and agent.runs(sid)[0]["task"] == "Document what sub returns."
        )
        diag = await b.wait_diagnostic(
            uri, lambda d: d.data["state"] == "ready", "the ready diagnostic"
        )
        assert diag.range.start.line == 5 and "documented" in diag.message
        assert await b.command("handoff.apply", {"sessionId": sid}) == {
            "applied": True,
            "conflicts": 0,
        }
        assert b.text(uri) == APP.replace("    return a - b", DOC)
        await b.wait_state(sid, "applied")
    finally:
        await b.stop()
    assert len(agent.runs(sid)) == 1  # ran once: closing the editor did not interrupt or restart it


async def test_two_editors_see_one_session_and_only_one_applies(caps, agent: Agent, repo: Path):
    agent.configure(runs=[[["replace", "app.py", "    return a - b", DOC]]])
    a = await Editor.start(caps, repo)
    b = await Editor.start(caps, repo)
    try:
        b_uri = b.open(repo / "app.py")
        a_uri = a.open(repo / "app.py")
        sid = await delegate_sub(a, a_uri)
        await b.wait_state(sid, "ready")  # B sees A's session live, as it changes
        assert b.states(sid)[-1] == "ready" and len(b.lists) >= 2
        await b.wait_diagnostic(b_uri, lambda d: d.data["state"] == "ready", "B's ready diagnostic")

        assert await a.command("handoff.apply", {"sessionId": sid}) == {
            "applied": True,
            "conflicts": 0,
        }
        await b.wait_state(sid, "applied")
        with pytest.raises(Exception) as refused:
            await b.command("handoff.apply", {"sessionId": sid})
        assert "applied already" in str(refused.value)
        assert a.text(a_uri) == APP.replace("    return a - b", DOC)
        assert b.text(b_uri) == APP  # B's buffer was not written a second time
        assert len(a.edits) == 1 and not b.edits
        await b.wait_for(lambda: not b.handoff_diagnostics(b_uri), "B's diagnostics to go")
    finally:
        await a.stop()
        await b.stop()


async def test_terminal_sessions_show_live_in_the_editor(caps, agent: Agent, repo: Path):
    agent.configure(
        runs=[[["replace", "app.py", "    return a - b", DOC]]], summary="from the terminal"
    )
    editor = await Editor.start(caps, repo)
    try:
        uri = editor.open(repo / "app.py")
        run = handoff(repo, "run", "document sub", "--file", "app.py", "--lines", "6-6")
        assert run.returncode == 0, run.stderr
        sid = run.stdout.split()[0]
        ready = await editor.wait_state(sid, "ready")
        assert ready["summary"] == "from the terminal"
        await editor.wait_diagnostic(
            uri, lambda d: d.data["sessionId"] == sid, "the ready diagnostic"
        )

        applied = handoff(repo, "apply", sid)
        assert applied.returncode == 0 and "applied  app.py" in applied.stdout, applied
        assert (repo / "app.py").read_text() == APP.replace("    return a - b", DOC)
        await editor.wait_state(sid, "applied")
        await editor.wait_for(lambda: not editor.handoff_diagnostics(uri), "the diagnostic to go")
        listed = handoff(repo, "ls")
        assert (
            f"{sid}  applied" in " ".join(listed.stdout.split("  ")) or "applied" in listed.stdout
        )
    finally:
        await editor.stop()


async def test_a_killed_daemon_interrupts_and_the_session_resumes(
    caps, agent: Agent, repo: Path, state_dir: Path
):
    agent.configure(runs=[[["replace", "app.py", "    return a - b", DOC]]], wait=True)
    editor = await Editor.start(caps, repo)
    try:
        uri = editor.open(repo / "app.py")
        before = (repo / "app.py").read_bytes()
        sid = await delegate_sub(editor, uri)
        await editor.wait_for(lambda: agent.started(sid), "the agent to start")
        agent_pid = agent.runs(sid)[0]["pid"]
        pid = daemon_pid(state_dir)
        os.kill(pid, signal.SIGKILL)

        await editor.wait_state(sid, "interrupted")  # a new daemon was started and found it so
        warnings = [m for m in editor.messages(types.MessageType.Warning) if "daemon stopped" in m]
        assert len(warnings) == 1, editor.messages()
        assert daemon_pid(state_dir) != pid
        wait_gone(agent_pid)  # the orphaned agent was ended, not left running
        assert (repo / "app.py").read_bytes() == before  # nothing of the developer's touched

        agent.release(sid)
        resumed = handoff(repo, "resume", sid)
        assert resumed.returncode == 0 and "ready" in resumed.stdout, resumed
        await editor.wait_state(sid, "ready")
        assert await editor.command("handoff.apply", {"sessionId": sid}) == {
            "applied": True,
            "conflicts": 0,
        }
        assert editor.text(uri) == APP.replace("    return a - b", DOC)
    finally:
        await editor.stop()


def test_the_socket_is_private_and_other_users_are_refused(repo: Path, state_dir: Path):
    ls = handoff(repo, "ls")
    assert ls.returncode == 0, ls.stderr
    sock = protocol.socket_path(state_dir)
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as another user")
    probe = textwrap_probe(sock)
    # As another user the folder cannot even be entered...
    denied = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            probe,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "PermissionError" in denied.stdout + denied.stderr, denied
    # ...and with the folder and socket opened up, the daemon itself refuses the peer.
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in sock.parents if p != Path("/")}
    try:
        for p, mode in modes.items():
            os.chmod(p, mode | 0o005)
        os.chmod(sock, 0o666)
        refused = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-c",
                probe,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        for p, mode in modes.items():
            os.chmod(p, mode)
    assert "serves only its own user" in refused.stdout, refused
    assert status(state_dir) is not None  # and it still serves us


def textwrap_probe(sock: Path) -> str:
    return (
        "import json, socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.connect({str(sock)!r})\n"
        "print(s.makefile('rb').readline().decode())\n"
    )  # a refused peer is told at once


def test_daemon_status_stop_and_logs(repo: Path, state_dir: Path):
    assert handoff(repo, "daemon", "status").returncode == 1  # none runs yet
    assert handoff(repo, "ls").returncode == 0  # started on demand
    st = handoff(repo, "daemon", "status")
    assert st.returncode == 0, st
    pid = daemon_pid(state_dir)
    assert f"pid {pid}" in st.stdout and "socket:" in st.stdout and "clients: none" in st.stdout
    assert str(repo) in st.stdout
    logs = handoff(repo, "daemon", "logs")
    assert "listening on" in logs.stdout
    stopped = handoff(repo, "daemon", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    wait_gone(pid)
    assert handoff(repo, "daemon", "status").returncode == 1


def test_the_split_index_the_daemon_keeps_in_the_git_folder_goes_when_it_stops(
    repo: Path, state_dir: Path
):
    (repo / "app.py").write_text("edited, not staged\n")
    index = (repo / ".git" / "index").read_bytes()
    assert handoff(repo, "ls").returncode == 0  # the daemon opens the repository
    pid = daemon_pid(state_dir)
    deadline = time.monotonic() + 30
    while not list((repo / ".git").glob("sharedindex.*")):  # the kept index's (keptindex.py)
        assert time.monotonic() < deadline, "no kept index was made"
        time.sleep(0.05)
    assert handoff(repo, "daemon", "stop").returncode == 0
    wait_gone(pid)
    assert not list((repo / ".git").glob("sharedindex.*"))
    assert (repo / ".git" / "index").read_bytes() == index


def test_the_daemon_is_detached_and_exits_when_idle(repo: Path, state_dir: Path):
    (repo / ".handoff.toml").write_text("[daemon]\nidleMinutes = 0.02\n")
    assert handoff(repo, "ls").returncode == 0
    pid = daemon_pid(state_dir)
    assert os.getsid(pid) == pid  # a session of its own: no terminal, not the caller's group
    assert Path(f"/proc/{pid}/fd/0").resolve() == Path(os.devnull)
    assert (
        handoff(repo, "gc").returncode == 0
    )  # a request that loads the repository's configuration
    wait_gone(pid, timeout=30)  # 1.2 s idle with no client and no session: gone
    assert not protocol.socket_path(state_dir).exists()


def _fake_version_daemon(state_dir: Path) -> subprocess.Popen[bytes]:
    code = (
        "import sys; from handoff.agent import protocol; protocol.PROTOCOL_VERSION = 99\n"
        "from handoff.agent.daemon import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--state-dir", str(state_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while status(state_dir) is None:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return proc


async def test_a_daemon_of_another_version_is_replaced_when_idle_and_named_when_busy(
    agent: Agent, repo: Path, state_dir: Path
):
    old = _fake_version_daemon(state_dir)
    client = DaemonClient(state_dir)
    info = await client.connect()  # idle: replaced by one of ours
    assert info["protocolVersion"] == protocol.PROTOCOL_VERSION
    assert old.wait(30) == 0
    await client.close()
    stop_daemon(state_dir)

    agent.configure(runs=[[]], wait=True)
    busy = _fake_version_daemon(state_dir)
    raw = DaemonClient(state_dir)
    raw_conn = await raw._open()  # talk to it as a client of its own version would
    assert raw_conn is not None
    from handoff.agent.rpc import spawn_serve

    spawn_serve(raw_conn)
    await raw_conn.request(
        "initialize", {"protocolVersion": 99, "client": {"name": "old", "pid": 1}}
    )
    root = (await raw_conn.request("openRepo", {"path": str(repo)}))["root"]
    await raw_conn.request("delegate", {"root": root, "instruction": "wait"})
    with pytest.raises(DaemonUnavailable) as refused:
        await DaemonClient(state_dir).connect()
    assert "handoff daemon stop" in str(refused.value) and "1 active" in str(refused.value)
    assert busy.poll() is None  # left running: it has work
    raw_conn.close()
    stop_daemon(state_dir)
    busy.wait(30)


async def test_the_session_keeps_the_configuration_it_was_delegated_with(
    agent: Agent, repo: Path, tmp_path: Path
):
    # The editor's own settings (not the repository's) choose the agent; they travel with the request.
    agent.configure(runs=[[["write", "note.txt", "from the editor's agent\n"]]])
    toml = (repo / ".handoff.toml").read_text()
    (repo / ".handoff.toml").write_text("")  # the repository names no agent at all
    spec = toml.split("[agents.edit]\ncommand = ", 1)[1].strip()
    editor = await Editor.start(
        "neovim",
        repo,
        init_options={"agent": "mine", "agents": {"mine": {"command": json.loads(spec)}}},
    )
    try:
        uri = editor.open(repo / "app.py")
        sid = await delegate_sub(editor, uri)
        ready = await editor.wait_state(sid, "ready", "failed")
        assert ready["state"] == "ready" and ready["agent"] == "mine", ready
    finally:
        await editor.stop()


async def test_a_front_end_that_dies_changes_nothing_in_the_daemon(
    agent: Agent, repo: Path, state_dir: Path
):
    agent.configure(runs=[[["replace", "app.py", "    return a - b", DOC]]], wait=True)
    editor = await Editor.start("visual_studio_code", repo)
    uri = editor.open(repo / "app.py")
    sid = await delegate_sub(editor, uri)
    await editor.wait_for(lambda: agent.started(sid), "the agent to start")
    editor.client._server.kill()  # the editor's server dies without a word
    await editor.client.stop()
    agent.release(sid)
    deadline = time.monotonic() + 60
    while (st := status(state_dir)) is None or st["sessions"].get("ready") != 1:
        assert time.monotonic() < deadline, st
        await asyncio.sleep(0.05)
    assert st["clients"] == []
    applied = handoff(repo, "apply", sid)  # and nobody holds a claim on it
    assert applied.returncode == 0, applied
    assert (repo / "app.py").read_text() == APP.replace("    return a - b", DOC)


def test_notify_shows_a_desktop_notification_when_a_session_finishes(
    agent: Agent, repo: Path, tmp_path: Path
):
    agent.configure(
        runs=[[["write", "note.txt", "hi\n"]]], summary="wrote a note", extra_toml="notify = true"
    )
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    record = tmp_path / "notified.txt"
    fake = bin_dir / "notify-send"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" >> {record}\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    run = subprocess.run(
        [sys.executable, "-m", "handoff.agent.cli", "run", "write a note"],
        cwd=repo,
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 0, run
    deadline = time.monotonic() + 30
    while not record.exists() or "wrote a note" not in record.read_text():
        assert time.monotonic() < deadline, "no notification"
        time.sleep(0.05)
    assert "is ready" in record.read_text()
