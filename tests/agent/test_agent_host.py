"""The agent host: built-in agents in one child process, through litellm over real HTTP to a
scripted model on 127.0.0.1. The sessions are the real SessionManager's; only the agent's loop
runs in the host."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import anyio
import pytest
from handoff.agent.config import Config
from handoff.agent.host import AgentHost
from handoff.agent.manager import DelegateRequest, SessionManager
from handoff.agent.session import State
from handoff.offline_model import ScriptedModel


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def until(check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await anyio.sleep(0.05)


@pytest.fixture
def model():
    with ScriptedModel() as m:
        yield m


@pytest.fixture
async def host():
    h = AgentHost()
    yield h
    await h.close()


def manager(repo: Path, model: ScriptedModel, host: AgentHost, **cfg) -> SessionManager:
    config = Config(model="openai/scripted-model", apiBase=model.url, apiKey="sk-test", **cfg)
    mgr = SessionManager(repo, config, agent_host=host)
    mgr.load()
    return mgr


async def test_builtin_session_runs_in_the_host(repo: Path, model: ScriptedModel, host: AgentHost):
    model.tool_call("write_file", {"path": "notes.txt", "content": "from the host, key sk-test\n"})
    model.tool_call("finish", {"summary": "wrote notes"})
    mgr = manager(repo, model, host)
    s = await mgr.wait(mgr.delegate(DelegateRequest("write notes")).id)
    assert s.state is State.READY, s.error
    assert s.summary == "wrote notes" and s.steps == 2
    assert s.filesChanged == [(repo / "notes.txt").as_uri()]
    assert host.pid is not None and host.pid != os.getpid()
    # the host wrote the transcript into the session's own store, the API key replaced
    transcript = mgr.store.session_dir(s.id).joinpath("transcript.jsonl").read_text()
    assert "from the host, key ***" in transcript and "wrote notes" in transcript
    assert "sk-test" not in transcript
    kinds = [json.loads(line).get("type") for line in transcript.splitlines()]
    assert kinds[0] == "start" and kinds[-1] == "finish" and kinds.count("message") >= 4
    assert len(model.requests) == 2
    assert not (repo / "notes.txt").exists()  # the developer's tree is untouched until apply


async def test_the_host_hides_what_the_sessions_store_hides(
    repo: Path, model: ScriptedModel, host: AgentHost
):
    """A store with its own secrets to hide: the transcript the host writes hides them too."""
    from handoff.agent.secrets import Redactor
    from handoff.agent.store import Store

    model.tool_call(
        "write_file", {"path": "notes.txt", "content": "token tok-of-this-store, key sk-test\n"}
    )
    model.tool_call("finish", {"summary": "done"})
    config = Config(model="openai/scripted-model", apiBase=model.url, apiKey="sk-test")
    store = Store(repo, redactor=Redactor(["sk-test", "tok-of-this-store"]))
    mgr = SessionManager(repo, config, store=store, agent_host=host)
    mgr.load()
    s = await mgr.wait(mgr.delegate(DelegateRequest("write notes")).id)
    assert s.state is State.READY, s.error
    transcript = store.session_dir(s.id).joinpath("transcript.jsonl").read_text()
    assert "token ***, key ***" in transcript
    assert "tok-of-this-store" not in transcript and "sk-test" not in transcript


async def test_one_host_serves_concurrent_sessions(
    repo: Path, model: ScriptedModel, host: AgentHost
):
    mgr = manager(repo, model, host, maxParallel=4)
    ids = [mgr.delegate(DelegateRequest(f"task {i}")).id for i in range(4)]
    pids = set()
    for sid in ids:
        s = await mgr.wait(sid)
        assert s.state is State.READY, s.error
        assert s.summary == "script exhausted"
        pids.add(host.pid)
    assert len(pids) == 1 and None not in pids


async def test_cancel_stops_the_run_and_the_host_stays(
    repo: Path, model: ScriptedModel, host: AgentHost
):
    gate = threading.Event()
    model.on_request = lambda body: gate.wait(30)  # the model hangs until released
    mgr = manager(repo, model, host)
    try:
        s = mgr.delegate(DelegateRequest("hang"))
        await until(lambda: len(model.requests) == 1)
        pid = host.pid
        mgr.cancel(s.id)
        s = await mgr.wait(s.id)
        assert s.state is State.CANCELLED
    finally:
        gate.set()
    model.on_request = None
    again = await mgr.wait(mgr.delegate(DelegateRequest("after")).id)
    assert again.state is State.READY, again.error
    assert host.pid == pid


async def test_a_dead_host_fails_its_sessions_clearly_and_is_restarted(
    repo: Path,
    model: ScriptedModel,
    host: AgentHost,
):
    gate = threading.Event()
    model.on_request = lambda body: gate.wait(30)
    mgr = manager(repo, model, host)
    try:
        s = mgr.delegate(DelegateRequest("hang"))
        await until(lambda: len(model.requests) == 1)
        first = host.pid
        os.kill(first, signal.SIGKILL)
        s = await mgr.wait(s.id)
    finally:
        gate.set()
    assert s.state is State.FAILED
    assert "agent host process ended unexpectedly" in s.error and "-9" in s.error
    model.on_request = None
    again = await mgr.wait(mgr.delegate(DelegateRequest("after")).id)
    assert again.state is State.READY, again.error
    assert host.pid not in (None, first)


async def test_the_host_exits_when_idle_and_when_its_server_goes(repo: Path, model: ScriptedModel):
    host = AgentHost(idle_s=0.2)
    mgr = manager(repo, model, host)
    assert (await mgr.wait(mgr.delegate(DelegateRequest("one")).id)).state is State.READY
    pid = host.pid
    await until(lambda: not alive(pid), timeout=30)
    assert host.pid is None
    # a new run starts a new host; closing the server's side ends it
    assert (await mgr.wait(mgr.delegate(DelegateRequest("two")).id)).state is State.READY
    pid = host.pid
    assert pid is not None and alive(pid)
    await host.close()
    assert not alive(pid)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid
            ):
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def maps_litellm(pid: int) -> bool:
    """litellm's native module is mapped: the process imported litellm."""
    return "/litellm/" in Path(f"/proc/{pid}/maps").read_text()


async def test_the_language_server_never_loads_litellm_and_the_host_dies_with_the_daemon(
    repo: Path, model: ScriptedModel, state_dir: Path
):
    from tests.support.lsp_client import Editor

    gate = threading.Event()
    model.on_request = lambda body: gate.wait(60)
    editor = await Editor.start(
        "neovim",
        repo,
        env={
            "HANDOFF_MODEL": "openai/scripted-model",
            "HANDOFF_API_BASE": model.url,
            "HANDOFF_API_KEY": "sk-test",
        },
    )
    server = editor.client._server
    try:
        uri = editor.open(repo / "app.py")
        await editor.command(
            "handoff.delegate",
            {
                "uri": uri,
                "instruction": "x",
                "range": {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}},
            },
        )
        await until(lambda: len(model.requests) == 1)  # the agent is mid-request, in the host
        daemon = int((state_dir / "daemon" / "daemon.pid").read_text())
        hosts = [
            p
            for p in children(daemon)
            if b"handoff.agent.host" in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        assert len(hosts) == 1  # the session daemon's child, not the editor's server's
        assert maps_litellm(hosts[0]) and not maps_litellm(server.pid) and not maps_litellm(daemon)
        os.kill(
            daemon, signal.SIGKILL
        )  # the daemon dies without a word: its host must not outlive it
        await until(lambda: not alive(hosts[0]), timeout=30)
    finally:
        gate.set()
        await editor.stop()


def nice_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


OWN_GROUP = Path(
    "/proc/self/autogroup"
)  # Linux's per-session scheduling group, when the kernel has it


def group_nice(text: str) -> int:
    """The nice of an autogroup as /proc/PID/autogroup says it: "/autogroup-42 nice 19"."""
    return int(text.rsplit("nice", 1)[1])


def groups_in(diff: str) -> list[str]:
    return [line[1:] for line in diff.splitlines() if line.startswith("+/autogroup-")]


GROUP_CMD = (
    "if [ -r /proc/self/autogroup ]; then cat /proc/self/autogroup > group.txt; fi; "
    "grep '^se.slice' /proc/self/sched > slice.txt || true"
)


def custom_slices() -> bool:
    """Linux 6.12 and later honour a task's own scheduler slice."""
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return (major, minor) >= (6, 12) and Path("/proc/self/sched").exists()


def slices_in(diff: str) -> list[int]:
    return [int(line.split(":")[1]) for line in diff.splitlines() if line.startswith("+se.slice")]


@pytest.mark.parametrize("policy", ["allow", "sandbox"])
async def test_agents_run_at_background_priority(
    repo: Path, model: ScriptedModel, host: AgentHost, tmp_path: Path, policy: str
):
    """The editor's server keeps the CPU it needs: the host, its commands (sandboxed or not) and
    command agents run at nice 19 (the test process's own priority is the baseline), and so do
    their sessions' scheduling groups (autogroups), while the editor's own group is untouched."""
    from handoff.agent import sandbox
    from handoff.agent.processes import AGENT_NICE, AGENT_SLICE_NS

    from tests.support.agents import command_manager, write_agent

    if policy == "sandbox" and sandbox.available() is None:
        pytest.skip("no sandbox on this machine")
    base = os.getpriority(os.PRIO_PROCESS, 0)
    own_group = OWN_GROUP.read_text() if OWN_GROUP.exists() else None
    model.tool_call("run_command", {"command": f"cat /proc/self/stat > nice.txt; {GROUP_CMD}"})
    model.tool_call("finish", {"summary": "done"})
    mgr = manager(repo, model, host, commandPolicy=policy)
    s = await mgr.wait(mgr.delegate(DelegateRequest("nice")).id)
    assert s.state is State.READY, s.error
    assert nice_of(host.pid) == max(AGENT_NICE, base)
    seen = mgr.diff(s.id)
    assert "nice.txt" in seen
    stat = next(line for line in seen.splitlines() if line.startswith("+") and ")" in line)
    assert int(stat.rsplit(")", 1)[1].split()[16]) == max(AGENT_NICE, base)
    if own_group is not None:
        assert group_nice(Path(f"/proc/{host.pid}/autogroup").read_text()) >= AGENT_NICE
        [command_group] = groups_in(seen)
        assert group_nice(command_group) >= AGENT_NICE
        assert command_group != own_group.strip()
        assert OWN_GROUP.read_text() == own_group  # the editor's session keeps its priority
    if custom_slices():
        assert slices_in(seen) == [AGENT_SLICE_NS]
        sched = Path(f"/proc/{host.pid}/sched").read_text().splitlines(keepends=True)
        assert f"{AGENT_SLICE_NS}\n" in next(line for line in sched if line.startswith("se.slice"))

    argv = write_agent(
        tmp_path / "bin",
        "nice_agent",
        f"""
        pathlib.Path("nice.txt").write_text(str(os.getpriority(os.PRIO_PROCESS, 0)))
        time.sleep(0.5)
        pathlib.Path("nice.txt").write_text(str(os.getpriority(os.PRIO_PROCESS, 0)))
        os.system({GROUP_CMD!r})
    """,
    )
    cmd = command_manager(repo, {"nice": argv}, "nice")
    s = await cmd.wait(cmd.delegate(DelegateRequest("nice")).id)
    assert s.state is State.READY, s.error
    seen = cmd.diff(s.id)
    assert f"+{max(AGENT_NICE, base)}" in seen
    if own_group is not None:
        [agent_group] = groups_in(seen)
        assert group_nice(agent_group) >= AGENT_NICE
        assert OWN_GROUP.read_text() == own_group
    if custom_slices():
        assert slices_in(seen) == [AGENT_SLICE_NS]
