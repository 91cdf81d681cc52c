"""Protocol robustness: whatever a client sends, it gets an answer and the server keeps serving.

Malformed command arguments, unknown session ids, ranges out of bounds, bad URIs, documents that
were never opened, ``shutdown`` with sessions running, a SIGKILL mid-session. Each case ends in an
error response (never an internal error) or a clean message; afterwards a listSessions and a code
action still answer correctly, and the server's stdout carried nothing but JSON-RPC.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from lsprotocol import types

from tests.support.git import git, git_leftovers
from tests.support.lsp_client import Editor
from tests.support.lsp_fixtures import titled
from tests.support.lsp_raw import (
    alive,
    command,
    command_error,
    error_of,
    notify,
    request,
    still_serving,
)

APP = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
WHOLE = {"start": {"line": 0, "character": 0}, "end": {"line": 2, "character": 0}}
SESSION_COMMANDS = (
    "handoff.apply",
    "handoff.followUp",
    "handoff.cancel",
    "handoff.discard",
    "handoff.show",
    "handoff.preview",
)
OBJECT_COMMANDS = ("handoff.delegate", "handoff.delegateTodos", *SESSION_COMMANDS)
MAX_MESSAGE = 2100
# What a client sends does not depend on its capabilities: one client for the protocol cases
# (Neovim's, the one that sends `[]` for empty tables); both for start, stop and edits.
one_client = pytest.mark.parametrize("caps", ["neovim"])


def rng(l1: int, c1: int, l2: int, c2: int) -> dict:
    return {"start": {"line": l1, "character": c1}, "end": {"line": l2, "character": c2}}


def code_action_params(uri: str, r: dict, diagnostics: list | None = None) -> dict:
    return {"textDocument": {"uri": uri}, "range": r, "context": {"diagnostics": diagnostics or []}}


def no_error_popups(editor: Editor) -> None:
    assert editor.messages(types.MessageType.Error) == [], editor.messages(types.MessageType.Error)


@one_client
async def test_malformed_command_arguments(editor, agent, repo: Path):
    agent.configure()
    uri = editor.open(repo / "app.py")
    for name in OBJECT_COMMANDS:
        for args in ([None], [[1, 2]], ["a string"], [5], [{}, {}]):
            message = await command_error(editor, name, *args)
            assert f"{name} takes one JSON object argument" in message, message
        for args in ([{}], []):
            message = await command_error(editor, name, *args)
            assert f"{name}: bad arguments: " in message and "missing" in message, message
        # `arguments` that is not an array at all (pygls' converter reads an object as its keys)
        for arguments in ({"x": 1}, "text", 7):
            exc = await error_of(
                editor, "workspace/executeCommand", {"command": name, "arguments": arguments}
            )
            assert name in str(exc) or "invalid params" in str(exc), exc

    wrong_types = [
        ("handoff.delegate", {"uri": 5}, "`uri` must be a string"),
        (
            "handoff.delegate",
            {"uri": uri, "instruction": ["do", "it"]},
            "`instruction` must be a string (or null)",
        ),
        (
            "handoff.delegate",
            {"uri": uri, "instruction": "x", "agent": {"name": "edit"}},
            "`agent` must be a string",
        ),
        (
            "handoff.delegate",
            {"uri": uri, "instruction": "x", "diagnostics": "none"},
            "`diagnostics` must be an array",
        ),
        (
            "handoff.delegate",
            {"uri": uri, "range": "all"},
            "bad arguments: invalid value for type, expected Position @ arguments.range.start",
        ),
        (
            "handoff.delegate",
            {"uri": uri, "range": {"start": 1}},
            "expected int @ arguments.range.start.line",
        ),
        ("handoff.delegateTodos", {"uri": None}, "`uri` must be a string"),
        (
            "handoff.apply",
            {"sessionId": "x", "conflictMarkers": "yes"},
            "`conflictMarkers` must be true or false",
        ),
        (
            "handoff.followUp",
            {"sessionId": "x", "instruction": 42},
            "`instruction` must be a string (or null)",
        ),
    ]
    for name in SESSION_COMMANDS:
        for value in (5, None, [], {}, True):
            wrong_types.append((name, {"sessionId": value}, "`sessionId` must be a string"))
    for name, arg, expected in wrong_types:
        message = await command_error(editor, name, arg)
        assert expected in message, (name, arg, message)

    # huge strings: an answer, and a message that does not echo a megabyte
    huge = "x" * 1_000_000
    for name, arg in [
        ("handoff.apply", {"sessionId": huge}),
        ("handoff.delegate", {"uri": "file:///" + huge, "instruction": "x"}),
        ("handoff.delegate", {"uri": uri, "instruction": "x", "agent": huge}),
        ("handoff.discard", {huge: 1}),
    ]:
        message = await command_error(editor, name, arg)
        assert 0 < len(message) < MAX_MESSAGE, (name, len(message))
    exc = await error_of(
        editor, "workspace/executeCommand", {"command": "handoff." + huge, "arguments": []}
    )
    assert "is not defined" in str(exc) and len(str(exc)) < MAX_MESSAGE

    # odd but well-typed values are accepted and do what they say
    sid = (
        await command(
            editor,
            "handoff.delegate",
            {
                "uri": uri,
                "range": WHOLE,
                "instruction": "odd diagnostics",
                "agent": None,
                "diagnostics": [
                    1,
                    None,
                    "a plain string",
                    {"range": 5},
                    {"severity": [1], "message": {"a": 1}},
                    {"range": {"start": {"line": "x"}}, "code": [], "source": 7},
                ],
                "unknownKey": {"ignored": True},
            },
        )
    )["sessionId"]
    await editor.wait_state(sid, "ready")
    assert (await command(editor, "handoff.discard", {"sessionId": sid})) == {}

    await still_serving(editor, uri)
    no_error_popups(editor)
    assert editor.check_stdout() > 50


@one_client
async def test_unknown_session_ids(editor, agent, repo: Path):
    agent.configure()
    uri = editor.open(repo / "app.py")
    for name in SESSION_COMMANDS:
        for sid in ("nope", "", "../../../etc/passwd", "ünïcødé ✓", "x" * 100_000):
            arg = {"sessionId": sid}
            if name == "handoff.followUp":
                arg["instruction"] = "go on"
            message = await command_error(editor, name, arg)
            assert message.startswith("there is no Handoff session `"), message
            assert len(message) < MAX_MESSAGE
    # a diagnostic that names a session this server does not know: no action for it, no error
    ghost = {
        "range": rng(0, 0, 0, 5),
        "message": "old",
        "source": "handoff",
        "data": {"sessionId": "ghost", "state": "ready"},
    }
    actions = await request(
        editor, "textDocument/codeAction", code_action_params(uri, rng(0, 0, 0, 5), [ghost])
    )
    assert [a["title"] for a in actions] == ["Delegate to background agent"]
    await still_serving(editor, uri)
    no_error_popups(editor)
    editor.check_stdout()


@one_client
async def test_ranges_out_of_bounds(editor, agent, repo: Path):
    agent.configure()
    uri = editor.open(repo / "app.py")
    for bad, where in [
        (rng(-1, 0, 0, 0), "params.range.start"),
        (rng(0, -3, 1, 0), "params.range.start"),
        (rng(0, 0, 2**31, 0), "params.range.end"),
        (rng(0, 0, 1, 2**40), "params.range.end"),
    ]:
        exc = await error_of(editor, "textDocument/codeAction", code_action_params(uri, bad))
        assert "textDocument/codeAction: invalid params" in str(exc) and where in str(exc), exc

    # past the end of the document: an answer like any other
    actions = await request(
        editor, "textDocument/codeAction", code_action_params(uri, rng(500, 0, 900, 7))
    )
    assert [a["title"] for a in actions] == ["Delegate to background agent"]
    # start after end (a selection made backwards): read in order
    actions = await request(
        editor, "textDocument/codeAction", code_action_params(uri, rng(4, 0, 1, 3))
    )
    # (a bare selection, in a client that cannot prompt: a TODO line goes above its first line)
    edit = actions[0]["edit"]
    inserted = (
        edit["documentChanges"][0]["edits"] if "documentChanges" in edit else edit["changes"][uri]
    )
    assert inserted[0]["range"] == rng(1, 0, 1, 0)

    message = await command_error(
        editor, "handoff.delegate", {"uri": uri, "range": rng(-5, 0, 1, 0), "instruction": "x"}
    )
    assert "bad arguments: invalid value @ arguments.range.start" in message
    message = await command_error(
        editor, "handoff.delegate", {"uri": uri, "range": rng(0, 0, 2**33, 0), "instruction": "x"}
    )
    assert "invalid value @ arguments.range.end" in message
    message = await command_error(
        editor, "handoff.delegate", {"uri": uri, "range": rng(100, 0, 200, 0)}
    )
    assert "No instruction given and no TODO or comment" in message  # clamped to the last line

    async def delegated_range(r: dict) -> dict:
        sid = (
            await command(editor, "handoff.delegate", {"uri": uri, "range": r, "instruction": "x"})
        )["sessionId"]
        return (await editor.wait_state(sid, "ready"))["range"]

    assert await delegated_range(rng(3, 40, 100, 9)) == rng(
        3, 0, 6, 0
    )  # line 3 is empty; 6 is the end
    assert await delegated_range(rng(5, 4, 1, 2)) == rng(1, 2, 5, 4)
    assert await delegated_range(rng(2**31 - 1, 2**31 - 1, 2**31 - 1, 2**31 - 1)) == rng(6, 0, 6, 0)

    # edits the client describes past the end or backwards: the server's copy and anchors survive
    for change in (rng(50, 0, 60, 0), rng(3, 0, 1, 0), rng(1, 999, 1, 1000)):
        notify(
            editor,
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": 9},
                "contentChanges": [{"range": change, "text": ""}],
            },
        )
    notify(
        editor,
        "textDocument/didChange",
        {
            "textDocument": {"uri": uri, "version": 10},
            "contentChanges": [{"range": rng(0, 0, -1, 0), "text": "x"}],
        },
    )
    await still_serving(editor, uri)
    notify(
        editor,
        "textDocument/didChange",
        {"textDocument": {"uri": uri, "version": 11}, "contentChanges": [{"text": APP}]},
    )
    actions = await request(
        editor, "textDocument/codeAction", code_action_params(uri, rng(0, 0, 0, 0))
    )
    assert actions is None  # an empty range and no TODO: nothing to offer, and no error
    await editor.wait_for(
        lambda: any("invalid params" in m.message for m in editor.client.log_messages),
        "the log message about the unreadable change",
    )
    no_error_popups(editor)
    editor.check_stdout()


@one_client
async def test_bad_uris(editor, agent, repo: Path, tmp_path: Path):
    agent.configure()
    uri = editor.open(repo / "app.py")
    (repo / "sub").mkdir()
    elsewhere = tmp_path / "other-repo"
    elsewhere.mkdir()
    git(elsewhere, "init", "-q", "-b", "main")
    (elsewhere / "x.py").write_text("# TODO: not here\n")
    loose = tmp_path / "loose.py"
    loose.write_text("# TODO: nor here\n")
    cases = [
        ("untitled:Untitled-1", "is not a file on disk"),
        ("https://example.com/app.py", "is not a file on disk"),
        ("app.py", "is not a file on disk"),
        ("file:app.py", "is not a file on disk"),
        ("file:///%zz%00%ff", "is not a file on disk"),
        ("", "is not a file on disk"),
        (repo.as_uri(), "is a folder: delegate from a file in it"),
        ((repo / "sub").as_uri(), "is a folder"),
        ((repo / ".git" / "config").as_uri(), "inside git's own folder"),
        ((elsewhere / "x.py").as_uri(), "is outside the workspace folders"),
        (loose.as_uri(), "is not inside a git repository"),
        ("file:///" + "a" * 5000 + "/x.py", "File name too long"),
        ("file:///%E2%82%28/x.py", "is not inside a git repository"),
    ]
    for bad, expected in cases:
        for name, arg in (
            ("handoff.delegate", {"uri": bad, "range": WHOLE, "instruction": "x"}),
            ("handoff.delegateTodos", {"uri": bad}),
        ):
            message = await command_error(editor, name, arg)
            assert expected in message, (bad, name, message)
            assert len(message) < 600, message
        actions = await request(
            editor, "textDocument/codeAction", code_action_params(bad, rng(0, 0, 1, 0))
        )
        assert actions is None or isinstance(actions, list)
    await still_serving(editor, uri)
    assert git_leftovers(repo) == ([], [], [])
    assert git_leftovers(elsewhere) == ([], [], [])
    no_error_popups(editor)
    editor.check_stdout()


@one_client
async def test_documents_never_opened(editor, agent, repo: Path):
    agent.configure()
    uri = editor.open(repo / "app.py")
    todo = repo / "todo.py"
    todo.write_text("def slow():\n    # TODO: make it fast\n    return sum(range(10**6))\n")
    todo_uri = todo.as_uri()

    actions = await request(
        editor, "textDocument/codeAction", code_action_params(todo_uri, rng(1, 0, 2, 0))
    )
    assert [a["title"] for a in actions] == ["Delegate to background agent"]
    # executeCommand on a document never opened: the disk is what the developer sees
    sid = (await command(editor, "handoff.delegate", {"uri": todo_uri, "range": rng(1, 0, 2, 0)}))[
        "sessionId"
    ]
    assert (await editor.wait_state(sid, "ready"))["title"] == "make it fast"
    [other] = (await command(editor, "handoff.delegateTodos", {"uri": todo_uri}))["sessionIds"]
    await editor.wait_state(other, "ready")
    message = await command_error(
        editor, "handoff.delegate", {"uri": (repo / "gone.py").as_uri(), "range": WHOLE}
    )
    assert message == "gone.py does not exist on disk and is not open in the editor"

    # notifications about documents the server never saw: ignored, with a log line
    ghost = (repo / "ghost.py").as_uri()
    notify(
        editor,
        "textDocument/didChange",
        {"textDocument": {"uri": ghost, "version": 2}, "contentChanges": [{"text": "x = 1\n"}]},
    )
    notify(
        editor,
        "textDocument/didChange",
        {
            "textDocument": {"uri": ghost, "version": 3},
            "contentChanges": [{"range": rng(0, 0, 0, 0), "text": "y"}],
        },
    )
    notify(editor, "textDocument/didSave", {"textDocument": {"uri": ghost}})
    notify(editor, "textDocument/didClose", {"textDocument": {"uri": ghost}})
    notify(editor, "textDocument/didClose", {"textDocument": {"uri": "not a uri at all"}})
    await still_serving(editor, uri)
    await editor.wait_for(
        lambda: any("never opened" in m.message for m in editor.client.log_messages),
        "the log message about the unknown document",
    )

    # the documents that are open still follow the editor
    editor.type(uri, "# TODO: double it\n" + APP)
    actions = await editor.code_actions(
        uri,
        types.Range(
            start=types.Position(line=0, character=0), end=types.Position(line=0, character=0)
        ),
    )
    assert [a.title for a in actions] == ["Delegate TODO to background agent: double it"]
    no_error_popups(editor)
    editor.check_stdout()


class _Refusing(list):
    def append(self, item):
        raise RuntimeError("this editor cannot show documents today")


@one_client
async def test_editor_answers_the_server_badly(editor, agent, repo: Path):
    """workspace/applyEdit and window/showDocument answered with an error, or with something
    that is not an answer: the command still gets a clear answer, the session stays ready."""
    agent.configure(runs=[[["replace", "app.py", "return a - b", "return b - a"]]])
    uri = editor.open(repo / "app.py")
    sid = (
        await command(editor, "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": "x"})
    )["sessionId"]
    await editor.wait_state(sid, "ready")

    def failing(edit):
        raise RuntimeError("the buffer is read-only")

    editor.on_apply = failing
    message = await command_error(editor, "handoff.apply", {"sessionId": sid})
    assert "the editor answered workspace/applyEdit with an error" in message, message

    def garbage(edit):
        proto = editor.client.protocol
        proto._send_data(
            {"jsonrpc": "2.0", "id": proto.msg_id, "result": {"failureReason": "no `applied`"}}
        )
        return False

    editor.on_apply = garbage
    message = await command_error(editor, "handoff.apply", {"sessionId": sid})
    assert "the editor's answer could not be read" in message, message
    assert editor.session(sid)["state"] == "ready" and editor.text(uri) == APP

    editor.client.shown_documents = _Refusing()
    assert await command(editor, "handoff.show", {"sessionId": sid}) == {}
    await editor.wait_for(
        lambda: any("session.diff" in m for m in editor.messages(types.MessageType.Info)),
        "the message that says where the report is",
    )

    editor.on_apply = None
    assert await command(editor, "handoff.apply", {"sessionId": sid}) == {
        "applied": True,
        "conflicts": 0,
    }
    assert editor.text(uri) == APP.replace("return a - b", "return b - a")
    await still_serving(editor, uri)
    no_error_popups(editor)
    editor.check_stdout()


async def test_shutdown_with_sessions_running(caps, agent, repo: Path):
    agent.configure(wait=True)
    editor = await Editor.start(caps, repo)
    try:
        uri = editor.open(repo / "app.py")
        ids = [
            (
                await command(
                    editor,
                    "handoff.delegate",
                    {"uri": uri, "range": WHOLE, "instruction": f"task {n}"},
                )
            )["sessionId"]
            for n in range(3)
        ]
        for sid in ids:
            await editor.wait_for(lambda sid=sid: agent.started(sid), "the agents to start")
        pids = [agent.runs(sid)[0]["pid"] for sid in ids]
        started = time.monotonic()
        assert await request(editor, "shutdown", None, timeout=10) is None
        assert time.monotonic() - started < 5, "shutdown was not answered promptly"
        exc = await error_of(
            editor,
            "workspace/executeCommand",
            {"command": "handoff.listSessions", "arguments": [{}]},
        )
        assert "the server is shutting down" in str(exc)
        assert all(alive(pid) for pid in pids)  # the agents belong to the daemon: they go on
        notify(editor, "exit", None)
        assert await asyncio.wait_for(editor.client._server.wait(), 10) == 0
    finally:
        if editor.client._server.returncode is None:
            editor.client._server.kill()
        await editor.client.stop()
    editor.check_stdout()
    assert app_unchanged(repo)

    editor = await Editor.start(caps, repo)
    try:
        sessions = {s["id"]: s for s in await still_serving(editor, uri)}
        assert {sid: sessions[sid]["state"] for sid in ids} == dict.fromkeys(ids, "running")
        for sid in ids:
            assert Path(sessions[sid]["worktree"]).is_dir()
        trees, branches, _ = git_leftovers(repo)
        assert len(trees) == 3 and sorted(branches) == sorted(
            f"refs/heads/handoff/{sid}" for sid in ids
        )
        for sid in ids:
            assert (
                await command(editor, "handoff.discard", {"sessionId": sid}) == {}
            )  # cancels them
        assert git_leftovers(repo) == ([], [], [])
        assert not any(Path(sessions[sid]["worktree"]).exists() for sid in ids)
        assert not any(alive(pid) for pid in pids)
        no_error_popups(editor)
    finally:
        await editor.stop()
    editor.check_stdout()


def app_unchanged(repo: Path) -> bool:
    return (repo / "app.py").read_text() == APP and git(
        repo, "status", "--porcelain"
    ) == "?? .handoff.toml\n"


async def test_sigkill_mid_session_then_restart(caps, agent, repo: Path):
    agent.configure(wait=True, runs=[[["replace", "app.py", "return a - b", "return b - a"]]])
    editor = await Editor.start(caps, repo)
    try:
        uri = editor.open(repo / "app.py")
        ready = (
            await command(
                editor, "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": "finishes"}
            )
        )["sessionId"]
        agent.release(ready)
        await editor.wait_state(ready, "ready")
        running = (
            await command(
                editor,
                "handoff.delegate",
                {"uri": uri, "range": WHOLE, "instruction": "killed under it"},
            )
        )["sessionId"]
        await editor.wait_for(lambda: agent.started(running), "the agent to start")
        agent_pid = agent.runs(running)[0]["pid"]
        await still_serving(editor, uri)  # nothing in flight: the stream ends on a whole message
        server = editor.client._server
        os.kill(server.pid, signal.SIGKILL)
        assert await asyncio.wait_for(server.wait(), 10) == -signal.SIGKILL
    finally:
        await editor.client.stop()
    editor.check_stdout()
    worktree = Path(editor.session(running)["worktree"])
    assert worktree.is_dir() and app_unchanged(repo)

    editor = await Editor.start(caps, repo)
    try:
        sessions = {s["id"]: s for s in await still_serving(editor, uri)}
        # the editor's server died; the session did not: it still runs in the daemon
        assert sessions[running]["state"] == "running" and sessions[ready]["state"] == "ready"
        assert alive(agent_pid)
        assert worktree.is_dir() and (worktree / "app.py").read_text() == APP
        assert str(worktree) in git(repo, "worktree", "list", "--porcelain")
        assert len(git_leftovers(repo)[0]) == 2
        agent.release(running)
        await editor.wait_state(running, "ready")
        assert len(agent.runs(running)) == 1
        for sid in (ready, running):
            assert await command(editor, "handoff.discard", {"sessionId": sid}) == {}
        assert git_leftovers(repo) == ([], [], [])
        assert not worktree.exists() and app_unchanged(repo)
        no_error_popups(editor)
    finally:
        await editor.stop()
    editor.check_stdout()


@pytest.mark.parametrize("init_options", [[], {"handoff": []}, {"handoff": None}])
async def test_empty_initialization_options_are_accepted(agent, repo: Path, init_options):
    """Neovim sends an empty Lua table as ``[]``: that is no configuration, not a bad one."""
    agent.configure()
    editor = await Editor.start(
        "neovim", repo, init_options=init_options, configuration={"handoff": []}
    )
    try:
        uri = editor.open(repo / "app.py")
        await still_serving(editor, uri)
        sid = (
            await command(
                editor, "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": "x"}
            )
        )["sessionId"]
        assert (await editor.wait_state(sid, "ready"))[
            "agent"
        ] == "edit"  # .handoff.toml still counts
        assert editor.messages() == []
    finally:
        await editor.stop()


async def test_workspace_path_that_needs_percent_encoding(caps, agent, tmp_path: Path):
    """pygls keys open documents by the unquoted uri: a folder with a space or an accent must
    still find the open buffer (TODO actions, overlays) and send edits to the client's own uri."""
    root = tmp_path / "my project ü"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "app.py").write_text(APP)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    agent.repo = root
    agent.configure(
        read=["app.py"], runs=[[["replace", "app.py", "return a - b", "return a - b  # done"]]]
    )
    editor = await Editor.start(caps, root)
    try:
        uri = editor.open(root / "app.py")
        assert "%20" in uri and "%C3%BC" in uri
        editor.type(
            uri, "# TODO: comment the subtraction\n" + APP
        )  # unsaved: only the buffer has it
        actions = await editor.code_actions(
            uri,
            types.Range(
                start=types.Position(line=0, character=3), end=types.Position(line=0, character=3)
            ),
        )
        sid = (await editor.run(titled(actions, "Delegate TODO")))["sessionId"]
        await editor.wait_state(sid, "ready")
        assert agent.runs(sid)[0]["seen"]["app.py"].startswith("# TODO: comment")  # the overlay
        assert await command(editor, "handoff.apply", {"sessionId": sid}) == {
            "applied": True,
            "conflicts": 0,
        }
        assert editor.text(uri) == "# TODO: comment the subtraction\n" + APP.replace(
            "a - b", "a - b  # done"
        )
        no_error_popups(editor)
    finally:
        await editor.stop()
    editor.check_stdout()
