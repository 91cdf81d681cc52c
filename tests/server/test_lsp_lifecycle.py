"""Sessions over time: cancel, follow up, auto-apply, a server restart."""

from __future__ import annotations

import os
from pathlib import Path

from lsprotocol import types

from tests.support.lsp_client import Editor
from tests.support.lsp_fixtures import titled

APP = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
WHOLE = {"start": {"line": 0, "character": 0}, "end": {"line": 6, "character": 0}}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def delegate(editor: Editor, uri: str, instruction: str) -> str:
    return (
        await editor.command(
            "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": instruction}
        )
    )["sessionId"]


async def test_cancel_through_the_command(editor, agent, repo: Path):
    agent.configure(wait=True)
    uri = editor.open(repo / "app.py")
    sid = await delegate(editor, uri, "never finishes")
    await editor.wait_state(sid, "running")
    await editor.wait_for(lambda: agent.started(sid), "the agent to start")
    pid = agent.runs(sid)[0]["pid"]
    assert alive(pid)
    assert await editor.command("handoff.cancel", {"sessionId": sid}) == {}
    await editor.wait_state(sid, "cancelled")
    assert not alive(pid)
    await editor.wait_for(lambda: not editor.handoff_diagnostics(uri), "the diagnostic to go")
    # a cancelled session keeps its worktree until it is discarded
    assert Path(editor.session(sid)["worktree"]).exists()
    assert await editor.command("handoff.discard", {"sessionId": sid}) == {}
    discarded = await editor.wait_state(sid, "discarded")
    assert not Path(discarded["worktree"]).exists()


async def test_cancel_through_the_progress(editor, agent, repo: Path):
    agent.configure(wait=True)
    uri = editor.open(repo / "app.py")
    sid = await delegate(editor, uri, "wait for me")
    await editor.wait_for(lambda: agent.started(sid), "the agent to start")
    progress = editor.client.progress_reports

    def token():
        for tok, reports in progress.items():
            if any(
                isinstance(r, types.WorkDoneProgressBegin)
                and r.title == "Handoff: wait for me"
                and r.cancellable
                for r in reports
            ):
                return tok
        return None

    tok = await editor.wait_for(token, "the progress to begin")
    pid = agent.runs(sid)[0]["pid"]
    editor.client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token=tok))
    await editor.wait_state(sid, "cancelled")
    await editor.wait_for(
        lambda: any(isinstance(r, types.WorkDoneProgressEnd) for r in progress[tok]),
        "the progress to end",
    )
    assert not alive(pid)


async def test_follow_up_continues_in_the_same_worktree(editor, agent, repo: Path):
    agent.configure(
        read=["app.py"],
        runs=[
            [["replace", "app.py", "return a + b", "return a + b  # first"]],
            [["replace", "app.py", "return a - b", "return a - b  # second"]],
            [],
        ],
    )
    uri = editor.open(repo / "app.py")
    sid = await delegate(editor, uri, "first change")
    first = await editor.wait_state(sid, "ready")
    result = await editor.command(
        "handoff.followUp", {"sessionId": sid, "instruction": "also the other one"}
    )
    assert result == {"sessionId": sid}
    await editor.wait_for(lambda: editor.states(sid)[-1] != "ready", "the follow-up to start")
    second = await editor.wait_state(sid, "ready")
    runs = agent.runs(sid)
    assert len(runs) == 2 and runs[0]["cwd"] == runs[1]["cwd"] == first["worktree"]
    assert "# first" in runs[1]["seen"]["app.py"]  # the second run sees the first run's change
    assert runs[1]["task"] == "also the other one"
    assert second["worktree"] == first["worktree"]

    # From the code action, with no instruction: a comment at the origin says what next.
    editor.type(uri, "# Also check the types.\n" + APP)
    diag = await editor.wait_diagnostic(
        uri,
        lambda d: d.data["state"] == "ready" and d.range.start.line == 1,
        "the ready diagnostic, moved down",
    )
    actions = await editor.code_actions(uri, diag.range, [diag])
    assert (await editor.run(titled(actions, "Handoff: Follow up on"))) == {"sessionId": sid}
    await editor.wait_for(lambda: len(agent.runs(sid)) == 3, "the third run")
    assert agent.runs(sid)[2]["task"] == "Also check the types."
    await editor.wait_state(sid, "ready")

    assert (await editor.command("handoff.apply", {"sessionId": sid}))["applied"]
    assert editor.text(uri) == "# Also check the types.\n" + APP.replace(
        "a + b", "a + b  # first"
    ).replace("a - b", "a - b  # second")


async def test_auto_apply(caps, agent, repo: Path):
    agent.configure(
        runs=[[["replace", "app.py", "return a - b", "return a - b  # auto"]]],
        extra_toml="autoApply = true",
    )
    editor = await Editor.start(caps, repo)
    try:
        uri = editor.open(repo / "app.py")
        sid = await delegate(editor, uri, "apply me yourself")
        await editor.wait_state(sid, "applied")
        assert editor.text(uri) == APP.replace("a - b", "a - b  # auto")
    finally:
        await editor.stop()


async def test_restart_lists_the_sessions_again(caps, agent, repo: Path):
    agent.configure(wait=True, runs=[[["replace", "app.py", "return a - b", "return 0"]]])
    editor = await Editor.start(caps, repo)
    try:
        uri = editor.open(repo / "app.py")
        ready, applied, running = [await delegate(editor, uri, name) for name in ("r", "a", "x")]
        for sid in (ready, applied):
            agent.release(sid)
            await editor.wait_state(sid, "ready")
        assert (await editor.command("handoff.apply", {"sessionId": applied}))["applied"]
        editor.save(uri)
        await editor.wait_for(lambda: agent.started(running), "the third agent to start")
        pid = agent.runs(running)[0]["pid"]
    finally:
        await editor.stop()
    assert alive(pid)  # the editor's exit stops nothing: the session belongs to the daemon

    editor = await Editor.start(caps, repo)
    try:
        sessions = (await editor.command("handoff.listSessions", {}))["sessions"]
        states = {s["id"]: s["state"] for s in sessions}
        assert states == {ready: "ready", applied: "applied", running: "running"}
        uri = (repo / "app.py").as_uri()
        await editor.wait_for(
            lambda: (
                {d.data["sessionId"] for d in editor.handoff_diagnostics(uri)} == {ready, running}
            ),
            "the diagnostics of the sessions",
        )
        agent.release(running)  # the one still running finishes under the new editor
        await editor.wait_state(running, "ready")
        assert len(agent.runs(running)) == 1
    finally:
        await editor.stop()


async def test_editor_vanishing_leaves_running_sessions_running(agent, repo: Path):
    """No shutdown, no exit: the editor's end of stdin just closes (it crashed)."""
    agent.configure(wait=True)
    editor = await Editor.start("neovim", repo)
    try:
        uri = editor.open(repo / "app.py")
        sid = await delegate(editor, uri, "interrupted")
        await editor.wait_for(lambda: agent.started(sid), "the agent to start")
        pid = agent.runs(sid)[0]["pid"]
        server = editor.client._server
        server.stdin.close()
        assert await server.wait() == 0
    finally:
        await editor.client.stop()
    assert alive(pid)
    editor = await Editor.start("neovim", repo)
    try:
        [s] = (await editor.command("handoff.listSessions", {}))["sessions"]
        assert (s["id"], s["state"]) == (sid, "running")
        agent.release(sid)
        await editor.wait_state(sid, "ready")
    finally:
        await editor.stop()
