"""ACP agents end to end: a scripted agent built on the ACP SDK (tests/support/acp_agent.py), run as
a real process, driven through the SessionManager with real git."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest
from handoff.agent import config as config_mod
from handoff.agent.manager import DelegateRequest, SessionError, SessionManager
from handoff.agent.processes import pid_alive
from handoff.agent.session import State

from tests.support.agents import trust_repo
from tests.support.git import git, git_leftovers
from tests.support.paths import SUPPORT

AGENT = SUPPORT / "acp_agent.py"
APP = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"


def acp_manager(
    repo: Path, tmp_path: Path, mode: str, extra: str = ""
) -> tuple[SessionManager, Path]:
    log = tmp_path / f"{mode}.log"
    argv = ", ".join(json.dumps(a) for a in [sys.executable, str(AGENT), mode, str(log)])
    (repo / ".handoff.toml").write_text(
        f'agent = "scripted"\n{extra}\n[agents.scripted]\nacp = [{argv}]\n'
    )
    trust_repo(repo)
    cfg, messages = config_mod.load(repo)
    assert messages == []
    mgr = SessionManager(repo, cfg)
    mgr.load()
    return mgr, log


def events(log: Path, kind: str) -> list[dict]:
    if not log.exists():
        return []
    return [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == kind]


def transcript(mgr: SessionManager, sid: str, kind: str) -> list[dict]:
    return [e for e in mgr.store.read_transcript(sid) if e.get("type") == kind]


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is in process group ``pgid``."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    return True
        except (OSError, IndexError, ValueError):
            continue
    return False


async def test_edit_through_fs_with_plan_permission_and_usage(repo: Path, tmp_path: Path):
    mgr, log = acp_manager(repo, tmp_path, "edit")
    progress: list[tuple[str, int, float]] = []
    mgr.subscribe(lambda s: None, lambda s, message: progress.append((message, s.steps, s.costUsd)))
    try:
        rng = {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 16}}
        s = mgr.delegate(DelegateRequest("mark add as checked", file="app.py", range=rng))
        s = await mgr.wait(s.id)
        assert s.state is State.READY, s.error
        assert s.summary == "Marked add() as checked."
        assert s.steps == 2 and s.costUsd == 0.0123
        assert s.filesChanged == [(repo / "app.py").as_uri()]
        assert "+    return a + b  # via acp" in mgr.diff(s.id)
        # what the agent was told and offered
        (init,) = events(log, "initialize")
        assert init["client"] == "handoff" and init["capabilities"]["terminal"] is True
        assert init["capabilities"]["fs"] == {"readTextFile": True, "writeTextFile": True}
        (new,) = events(log, "new_session")
        assert Path(new["cwd"]) == Path(s.worktree)
        assert new["pgid"] == new["pid"]  # a process group of its own
        (prompt,) = events(log, "prompt")
        assert prompt["text"] == (mgr.store.session_dir(s.id) / "task.md").read_text()
        assert "mark add as checked" in prompt["text"] and "def add(a, b):" in prompt["text"]
        assert events(log, "permission") == [{"event": "permission", "answer": "yes"}]
        # streamed: the tool call's title with the plan's count, then the usage's cost
        assert ("Edit app.py (plan 1/2 done)", 2, 0.0) in progress
        assert progress[-1] == ("Edit app.py (plan 2/2 done)", 2, 0.0123)
        (perm,) = transcript(mgr, s.id, "acp_permission")
        assert perm["answer"] == "allow_once" and perm["policy"] == "worktree"
        assert [e["title"] for e in transcript(mgr, s.id, "acp_tool_call")] == [
            "Read app.py",
            "Edit app.py",
        ]

        # a follow-up continues the same ACP session in the same process
        assert pid_alive(new["pid"])
        mgr.follow_up(s.id, "note the follow-up")
        s = await mgr.wait(s.id)
        assert s.state is State.READY, s.error
        assert s.summary == "follow-up 2 done"
        prompts = events(log, "prompt")
        assert [(p["session"], p["n"]) for p in prompts] == [("s1", 1), ("s1", 2)]
        assert "note the follow-up" in prompts[1]["text"]
        assert len(events(log, "new_session")) == 1

        report = mgr.apply_to_disk(s.id)
        assert report.written == ["app.py"] and not report.conflicts
        assert (repo / "app.py").read_text() == APP.replace(
            "return a + b", "return a + b  # via acp"
        ) + "# follow-up 2\n"
        # applied: the kept agent process is ended
        with anyio.fail_after(5):
            while pid_alive(new["pid"]) and not _zombie(new["pid"]):
                await anyio.sleep(0.02)
    finally:
        await mgr.close()


def _zombie(pid: int) -> bool:
    try:
        return ") Z" in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True


async def test_follow_up_after_the_process_ended_starts_a_new_session_with_the_summary(
    repo: Path, tmp_path: Path
):
    mgr, log = acp_manager(repo, tmp_path, "edit")
    try:
        s = await mgr.wait(mgr.delegate(DelegateRequest("mark add as checked")).id)
        assert s.state is State.READY, s.error
        await mgr.close()  # the daemon restarted, say: the agent process is gone
        mgr2 = SessionManager(repo, mgr.config)
        mgr2.load()
        mgr2.follow_up(s.id, "and now the rest")
        s2 = await mgr2.wait(s.id)
        assert s2.state is State.READY, s2.error
        prompts = events(log, "prompt")
        assert len(events(log, "new_session")) == 2
        assert "## Earlier in this session" in prompts[1]["text"]
        assert "Result: Marked add() as checked." in prompts[1]["text"]
        assert prompts[1]["text"].rstrip().endswith("and now the rest")
        await mgr2.close()
    finally:
        await mgr.close()


async def test_follow_up_after_the_process_ended_loads_the_session_where_offered(
    repo: Path, tmp_path: Path
):
    mgr, log = acp_manager(repo, tmp_path, "loadable")
    try:
        s = await mgr.wait(mgr.delegate(DelegateRequest("mark add as checked")).id)
        assert s.state is State.READY, s.error
        await mgr.close()
        mgr2 = SessionManager(repo, mgr.config)
        mgr2.load()
        mgr2.follow_up(s.id, "and now the rest")
        s2 = await mgr2.wait(s.id)
        assert s2.state is State.READY, s2.error
        assert s2.summary == "follow-up 2 done"  # not the replayed history
        (loaded,) = events(log, "load_session")
        assert loaded["session"] == "s1" and loaded["known"]
        assert len(events(log, "new_session")) == 1
        prompts = events(log, "prompt")
        assert [(p["session"], p["n"]) for p in prompts] == [("s1", 1), ("s1", 2)]
        assert "and now the rest" in prompts[1]["text"] and "## Earlier" not in prompts[1]["text"]
        assert "+# follow-up 2" in mgr2.diff(s.id)
        await mgr2.close()
    finally:
        await mgr.close()


async def test_a_reported_cost_past_max_cost_stops_the_agent(repo: Path, tmp_path: Path):
    mgr, log = acp_manager(repo, tmp_path, "ask", 'maxCostUsd = 0.01\npermissions = "ask"')
    try:  # it reports 0.0123 USD while its question waits: no one needs to answer
        s = await mgr.wait(mgr.delegate(DelegateRequest("mark add as checked")).id)
        assert s.state is State.FAILED
        assert s.error == (
            "cost limit reached (maxCostUsd = 0.01; the agent reported 0.0123 USD); "
            "agent `scripted` stopped"
        )
        assert s.costUsd == 0.0123 and s.steps == 2 and s.question is None
        (new,) = events(log, "new_session")
        assert not group_alive(new["pgid"])
    finally:
        await mgr.close()


async def test_rejected_permission_leaves_no_change(repo: Path, tmp_path: Path):
    mgr, log = acp_manager(repo, tmp_path, "edit", 'permissions = "reject"')
    try:
        s = await mgr.wait(mgr.delegate(DelegateRequest("mark add as checked")).id)
        assert s.state is State.READY, s.error
        assert s.summary == "permission rejected; nothing changed"
        assert s.filesChanged == [] and mgr.diff(s.id) == ""
        assert events(log, "permission") == [{"event": "permission", "answer": "no"}]
        (perm,) = transcript(mgr, s.id, "acp_permission")
        assert perm["answer"] == "reject_once" and perm["policy"] == "reject"
    finally:
        await mgr.close()


async def test_ask_puts_the_question_on_the_session_until_answered(repo: Path, tmp_path: Path):
    mgr, log = acp_manager(repo, tmp_path, "ask", 'permissions = "ask"')
    asked = anyio.Event()
    questions: list[dict] = []

    def on_change(s):
        if s.question is not None and not asked.is_set():
            questions.append(s.question)
            asked.set()

    mgr.subscribe(on_change)
    try:
        s = mgr.delegate(DelegateRequest("mark add as checked"))
        with pytest.raises(SessionError, match="no question waiting"):
            mgr.answer(s.id, "yes")
        with anyio.fail_after(20):
            await asked.wait()
        (q,) = questions
        assert q["toolCall"]["title"] == "Edit app.py" and q["toolCall"]["kind"] == "edit"
        assert [o["optionId"] for o in q["options"]] == ["yes", "always", "no"]
        assert mgr.get(s.id).state is State.RUNNING
        mgr.answer(s.id, "always")
        s = await mgr.wait(s.id)
        assert s.state is State.READY, s.error
        assert s.question is None
        assert events(log, "permission") == [{"event": "permission", "answer": "always"}]
        assert "+    return a + b  # via acp" in mgr.diff(s.id)
    finally:
        await mgr.close()


@pytest.mark.parametrize("mode", ["hang", "deaf"])
async def test_cancel_ends_cancelled_with_the_process_group_gone(
    repo: Path, tmp_path: Path, mode: str
):
    mgr, log = acp_manager(repo, tmp_path, mode)
    thinking = anyio.Event()
    mgr.subscribe(lambda s: None, lambda s, message: message.startswith("Think") and thinking.set())
    try:
        s = mgr.delegate(DelegateRequest("think hard"))
        with anyio.fail_after(20):
            await thinking.wait()
        (new,) = events(log, "new_session")
        (child,) = events(log, "child")
        assert group_alive(new["pgid"]) and pid_alive(child["pid"])
        mgr.cancel(s.id)
        with anyio.fail_after(15):  # the deaf one: session/cancel, the grace period, then killed
            s = await mgr.wait(s.id)
        assert s.state is State.CANCELLED
        assert events(log, "cancel") == [{"event": "cancel", "session": "s1"}]
        assert not group_alive(new["pgid"])
        with anyio.fail_after(5):
            while pid_alive(child["pid"]) and not _zombie(child["pid"]):
                await anyio.sleep(0.02)
    finally:
        await mgr.close()


async def test_an_agent_writing_straight_to_disk_is_diffed_from_the_worktree(
    repo: Path, tmp_path: Path
):
    mgr, log = acp_manager(repo, tmp_path, "disk")
    try:
        s = await mgr.wait(mgr.delegate(DelegateRequest("take notes")).id)
        assert s.state is State.READY, s.error
        assert s.summary == "wrote notes.txt myself"
        assert s.filesChanged == [(repo / "notes.txt").as_uri()]
        mgr.apply_to_disk(s.id)
        assert (repo / "notes.txt").read_text() == "written straight to disk\n"
    finally:
        await mgr.close()


async def test_an_escape_through_fs_write_is_refused(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    outside = tmp_path / "outside" / "escaped.txt"
    outside.parent.mkdir()
    monkeypatch.setenv("ACP_TEST_ESCAPE", str(outside))
    mgr, log = acp_manager(repo, tmp_path, "escape")
    try:
        s = await mgr.wait(mgr.delegate(DelegateRequest("escape")).id)
        assert s.state is State.READY, s.error
        assert not outside.exists()
        (esc,) = events(log, "escape")
        assert (
            esc["outcome"].startswith("refused")
            and "outside the session's worktree" in esc["outcome"]
        )
        assert esc["git"].startswith("refused") and "`.git` is off limits" in esc["git"]
        assert s.filesChanged == []
        refused = transcript(mgr, s.id, "acp_refused")
        assert [r["method"] for r in refused] == ["fs/write_text_file", "fs/write_text_file"]
    finally:
        await mgr.close()


async def test_terminal_runs_in_the_sandbox(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from handoff.agent import sandbox

    outside = tmp_path / "outside.txt"
    monkeypatch.setenv("ACP_TEST_ESCAPE", str(outside))
    kind = sandbox.available()
    if kind is None:
        pytest.skip("no sandbox on this machine")
    mgr, log = acp_manager(repo, tmp_path, "terminal")
    try:
        s = await mgr.wait(mgr.delegate(DelegateRequest("run something")).id)
        assert s.state is State.READY, s.error
        assert s.summary == "command exited 0"
        (term,) = events(log, "terminal")
        assert term["exit"] == 0 and term["output"].splitlines()[-1] == "out"
        assert (
            not outside.exists()
        )  # refused (Landlock), or written in the sandbox's own /tmp (bwrap)
        (started,) = transcript(mgr, s.id, "acp_terminal")
        assert started["sandbox"] == kind
        assert s.filesChanged == [(repo / "made.txt").as_uri()]
    finally:
        await mgr.close()


@pytest.mark.parametrize("mode, code", [("crash", 1), ("nologin", 2)])
async def test_an_agent_error_shows_its_stderr(repo: Path, tmp_path: Path, mode: str, code: int):
    mgr, log = acp_manager(repo, tmp_path, mode)
    try:
        s = await mgr.wait(mgr.delegate(DelegateRequest("anything")).id)
        assert s.state is State.FAILED
        assert (
            s.error
            == f"agent `scripted` exited with code {code}:\nError: Not logged in. Run /login"
        )
    finally:
        await mgr.close()


@pytest.mark.parametrize(
    "toml, message",
    [
        ('agent = "nosuch"\n', "no agent called `nosuch`"),
        (
            '[agents.gone]\nacp = ["handoff-no-such-agent-binary"]\n',
            "`handoff-no-such-agent-binary` was not found",
        ),
        ("", "the built-in agent has no model"),
    ],
)
async def test_an_agent_that_cannot_run_is_refused_before_anything_is_made(
    repo: Path, toml: str, message: str
):
    (repo / ".handoff.toml").write_text(toml)
    trust_repo(repo)
    cfg, _ = config_mod.load(repo, env={})
    mgr = SessionManager(repo, cfg)
    agent = "nosuch" if "nosuch" in toml else "gone" if "gone" in toml else "builtin"
    with pytest.raises(SessionError, match=message):
        mgr.delegate(DelegateRequest("do it", agent=agent))
    assert mgr.list() == []
    assert git_leftovers(repo) == ([], [], [])
    assert not (mgr.store.root / "sessions").exists()
    assert git(repo, "status", "--porcelain") == "?? .handoff.toml\n" or toml == ""


async def test_ask_reaches_the_editor_through_the_daemon(repo: Path, tmp_path: Path):
    """permissions = "ask" over the whole path: the question is a diagnostic at the origin whose
    code actions answer it (handoff.answer -> the daemon -> the agent)."""
    from lsprotocol import types

    from tests.support.lsp_client import Editor

    log = tmp_path / "ask.log"
    argv = ", ".join(json.dumps(a) for a in [sys.executable, str(AGENT), "ask", str(log)])
    (repo / ".handoff.toml").write_text(
        f'agent = "scripted"\npermissions = "ask"\n[agents.scripted]\nacp = [{argv}]\n'
    )
    trust_repo(repo)
    editor = await Editor.start("visual_studio_code", repo)
    try:
        uri = editor.open(repo / "app.py")
        rng = {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}}
        sid = (
            await editor.command(
                "handoff.delegate", {"uri": uri, "range": rng, "instruction": "mark add as checked"}
            )
        )["sessionId"]
        diag = await editor.wait_diagnostic(
            uri, lambda d: "asks permission" in d.message, "the question"
        )
        assert "Edit app.py" in diag.message and diag.severity == types.DiagnosticSeverity.Warning
        actions = await editor.code_actions(uri, diag.range, [diag])
        allow = [a for a in actions if a.command and a.command.command == "handoff.answer"]
        assert [a.command.arguments[0]["optionId"] for a in allow] == ["yes", "always", "no"]
        await editor.run(allow[0])
        await editor.wait_state(sid, "ready")
        assert events(log, "permission") == [{"event": "permission", "answer": "yes"}]
        assert (await editor.command("handoff.apply", {"sessionId": sid}))["applied"]
        assert "return a + b  # via acp" in editor.text(uri)
    finally:
        await editor.stop()
