"""Bad situations get a clear message, and the protocol stream stays clean."""

from __future__ import annotations

from pathlib import Path

import pytest
from handoff.offline_model import ScriptedModel
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from tests.support.agents import trust_repo
from tests.support.git import git
from tests.support.lsp_client import Editor

WHOLE = {"start": {"line": 0, "character": 0}, "end": {"line": 2, "character": 0}}


async def test_bad_requests_get_clear_errors(editor, agent, repo: Path, tmp_path: Path):
    outside = tmp_path / "elsewhere" / "x.py"
    outside.parent.mkdir()
    outside.write_text("x = 1\n")
    with pytest.raises(JsonRpcException, match="is not inside a git repository"):
        await editor.command(
            "handoff.delegate", {"uri": outside.as_uri(), "range": WHOLE, "instruction": "anything"}
        )
    with pytest.raises(JsonRpcException, match="not a file on disk"):
        await editor.command("handoff.delegate", {"uri": "untitled:Untitled-1", "instruction": "x"})
    for command in (
        "handoff.apply",
        "handoff.show",
        "handoff.cancel",
        "handoff.discard",
        "handoff.preview",
    ):
        with pytest.raises(JsonRpcException, match="there is no Handoff session `nope`"):
            await editor.command(command, {"sessionId": "nope"})
    with pytest.raises(JsonRpcException, match=r"bad arguments: .*sessionId"):
        await editor.command("handoff.apply", {"session": "typo"})
    uri = editor.open(repo / "app.py")
    with pytest.raises(JsonRpcException, match="No instruction given and no TODO or comment"):
        await editor.command("handoff.delegate", {"uri": uri, "range": WHOLE})
    with pytest.raises(JsonRpcException, match="no agent called `ghost`"):
        await editor.command(
            "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": "x", "agent": "ghost"}
        )

    agent.configure(wait=True)
    sid = (
        await editor.command(
            "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": "slow"}
        )
    )["sessionId"]
    await editor.wait_state(sid, "running")
    with pytest.raises(JsonRpcException, match=f"session {sid} is running, not ready"):
        await editor.command("handoff.apply", {"sessionId": sid})
    with pytest.raises(JsonRpcException, match="still running"):
        await editor.command("handoff.followUp", {"sessionId": sid, "instruction": "more"})
    await editor.command("handoff.discard", {"sessionId": sid})  # cancels, then discards
    await editor.wait_state(sid, "discarded")
    with pytest.raises(JsonRpcException, match="discarded, not ready"):
        await editor.command("handoff.apply", {"sessionId": sid})


async def test_no_model_is_refused_before_a_session_is_made(editor, repo: Path):
    uri = editor.open(repo / "app.py")  # no .handoff.toml, no HANDOFF_MODEL: the built-in agent
    with pytest.raises(
        JsonRpcException,
        match="the built-in agent has no model: set `model` "
        r"\(e.g. HANDOFF_MODEL=",
    ):
        await editor.command(
            "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": "anything"}
        )
    listed = await editor.command("handoff.listSessions", {})
    assert listed["sessions"] == []


async def test_empty_repository_works(caps, agent, tmp_path: Path):
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "a.py").write_text("x = 1\n")
    agent.repo = root
    agent.configure(runs=[[["replace", "a.py", "x = 1", "x = 2"]]])
    editor = await Editor.start(caps, root)
    try:
        uri = editor.open(root / "a.py")
        sid = (
            await editor.command(
                "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": "bump x"}
            )
        )["sessionId"]
        await editor.wait_state(sid, "ready")
        assert (await editor.command("handoff.apply", {"sessionId": sid}))["applied"]
        assert editor.text(uri) == "x = 2\n"
        assert git(root, "status", "--porcelain") == "?? .handoff.toml\n?? a.py\n"  # untouched
    finally:
        await editor.stop()


async def test_invalid_configuration_means_defaults_and_one_message(caps, repo: Path):
    (repo / ".handoff.toml").write_text('maxParallel = "lots"\nmaxSteps = 5\n')
    editor = await Editor.start(
        caps,
        repo,
        init_options={"maxCostUsd": -1, "autoApply": "maybe"},
        configuration={"handoff": {"timeoutS": "soon"}},
    )
    try:
        warning = await editor.wait_for(
            lambda: editor.messages(types.MessageType.Warning), "the configuration warning"
        )
        await editor.command("handoff.listSessions", {})  # start-up is over
        [text] = editor.messages(types.MessageType.Warning)
        for key in ("maxParallel", "maxCostUsd", "autoApply", "timeoutS"):
            assert key in text, text
        assert "maxSteps" not in text
        assert warning == [text]
    finally:
        await editor.stop()


async def test_configuration_sources_and_changes(caps, agent, repo: Path):
    agent.configure()  # .handoff.toml: agent = "edit"
    second = {"command": agent.argv()}
    editor = await Editor.start(
        caps,
        repo,
        init_options={"agents": {"second": second}},
        configuration={"handoff": {"agent": "second"}},
    )
    try:
        uri = editor.open(repo / "app.py")
        sid = (
            await editor.command(
                "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": "x"}
            )
        )["sessionId"]
        assert (await editor.wait_state(sid, "ready"))["agent"] == "second"
        editor.client.set_configuration({"handoff": {"agent": "edit"}})
        editor.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings=None)
        )
        await editor.command("handoff.listSessions", {})

        async def agent_now() -> str:
            sid = (
                await editor.command(
                    "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": "y"}
                )
            )["sessionId"]
            return (await editor.wait_state(sid, "ready", "failed"))["agent"]

        assert await agent_now() == "edit"
    finally:
        await editor.stop()


async def test_multi_root_workspace(caps, tmp_path: Path):
    roots = []
    for name in ("one", "two"):
        root = tmp_path / name
        root.mkdir()
        git(root, "init", "-q", "-b", "main")
        (root / f"{name}.py").write_text(f"# {name}\n")
        # a model, so the built-in agent is not refused (it fails later: nothing listens there)
        (root / ".handoff.toml").write_text(
            'model = "openai/none"\napiBase = "http://127.0.0.1:9"\n'
        )
        trust_repo(root)  # a model chosen by the repository counts only once trusted
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "init")
        roots.append(root)
    editor = await Editor.start(caps, roots[0], folders=roots)
    try:
        ids = []
        for root in roots:
            uri = editor.open(root / f"{root.name}.py")
            ids.append(
                (
                    await editor.command(
                        "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": "x"}
                    )
                )["sessionId"]
            )
        sessions = {
            s["id"]: s for s in (await editor.command("handoff.listSessions", {}))["sessions"]
        }
        assert [Path(sessions[i]["repoRoot"]).name for i in ids] == ["one", "two"]
    finally:
        await editor.stop()


async def test_model_errors_keep_the_protocol_stream_clean(repo: Path):
    """The built-in agent over real HTTP to a server that only answers 500: litellm raises (and
    may print); the session fails with a clear message; stdout carried nothing but JSON-RPC."""
    with ScriptedModel() as model:
        for _ in range(6):
            model.status(500)
        editor = await Editor.start(
            "neovim",
            repo,
            env={
                "HANDOFF_MODEL": "openai/scripted-model",
                "HANDOFF_API_BASE": model.url,
                "HANDOFF_API_KEY": "sk-test-not-a-secret",
                "LITELLM_LOG": "DEBUG",
            },
        )
        try:
            uri = editor.open(repo / "app.py")
            sid = (
                await editor.command(
                    "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": "x"}
                )
            )["sessionId"]
            failed = await editor.wait_state(sid, "failed", timeout=120)
            assert "unavailable" in failed["error"] and "500" in failed["error"]
            assert len(model.requests) >= 2  # retried
            assert "sk-test-not-a-secret" not in str(editor.lists)
            await editor.command("handoff.listSessions", {})
        finally:
            await editor.stop()
        assert editor.client.error is None
        assert editor.check_stdout() > 5
