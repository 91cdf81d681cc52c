"""The code action on a bare selection (no TODO, no comment): it asks in a client that can
prompt, and inserts a ``TODO(agent): `` line in one that cannot; per-hunk code actions and the
session's ``actions`` in a generic client."""

from __future__ import annotations

from pathlib import Path

import attrs
from lsprotocol import types

from tests.support.helix import HELIX_LIKE
from tests.support.lsp_client import Editor
from tests.support.lsp_fixtures import rng, titled

APP = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"


async def test_prompting_client_is_named_its_own_command(caps: str, agent, repo: Path):
    agent.configure(runs=[[["replace", "app.py", "return a - b", "return abs(a - b)"]]])
    editor = await Editor.start(caps, repo, experimental={"handoff": {"prompt": True}})
    try:
        uri = editor.open(repo / "app.py")
        actions = await editor.code_actions(uri, rng(5, 4, 5, 16))  # `return a - b`, no comment
        action = titled(actions, "Delegate to background agent")
        assert action.command.command == "handoff.client.delegatePrompt"
        arg = action.command.arguments[0]
        assert arg["uri"] == uri and arg["range"]["start"] == {"line": 5, "character": 4}
        # what the client does with it: ask, then delegate with the answer
        sid = (await editor.command("handoff.delegate", {**arg, "instruction": "absolute value"}))[
            "sessionId"
        ]
        ready = await editor.wait_state(sid, "ready")
        assert ready["title"] == "absolute value"
        assert agent.runs(sid)[0]["task"] == "absolute value"

        # a selection under a comment still delegates directly (the comment is the task)
        editor.type(uri, APP.replace("def sub", "# Return the absolute difference.\ndef sub"))
        action = titled(
            await editor.code_actions(uri, rng(5, 0, 7, 0)), "Delegate to background agent"
        )
        assert action.command.command == "handoff.delegate"
    finally:
        await editor.stop()


async def test_generic_client_gets_a_todo_line_then_per_hunk_actions(agent, repo: Path):
    agent.configure(
        runs=[
            [
                ["replace", "app.py", "    return a + b", "    return a + b  # sum"],
                ["replace", "app.py", "    return a - b", "    return a - b  # difference"],
            ]
        ]
    )
    bare = attrs.evolve(
        HELIX_LIKE,
        window=types.WindowClientCapabilities(
            work_done_progress=False,
            show_document=types.ShowDocumentClientCapabilities(support=True),
        ),
    )
    editor = await Editor.start(bare, repo)
    try:
        uri = editor.open(repo / "app.py")
        actions = await editor.code_actions(uri, rng(5, 4, 5, 16))
        action = titled(actions, "Delegate to background agent")
        assert action.edit is not None and action.command.command == "handoff.reveal"
        assert editor._apply(action.edit) == (True, None)  # the editor applies the action's edit...
        todo = "    # TODO(agent): \n"
        assert editor.text(uri) == APP.replace("def sub(a, b):\n", "def sub(a, b):\n" + todo)
        await editor.run(action)  # ...then runs its command: the cursor goes to the TODO's end
        shown = editor.client.shown_documents[-1]
        assert shown.uri == uri and shown.selection.start == types.Position(
            line=5, character=len(todo) - 1
        )

        # the developer types the task and picks the TODO's own action
        typed = APP.replace(
            "def sub(a, b):\n", "def sub(a, b):\n    # TODO(agent): comment the results\n"
        )
        editor.type(uri, typed)
        action = titled(
            await editor.code_actions(uri, rng(5, 10, 5, 10)),
            "Delegate TODO to background agent: comment the results",
        )
        sid = (await editor.run(action))["sessionId"]
        ready = await editor.wait_diagnostic(
            uri, lambda d: (d.data or {}).get("state") == "ready", "ready"
        )
        assert editor.lists == []  # no custom notifications: everything below is code actions

        hints = await editor.wait_for(
            lambda: (
                [d for d in editor.handoff_diagnostics(uri) if "hunkId" in (d.data or {})] or None
            ),
            "hunk hints",
        )
        assert [d.range.start.line for d in hints] == [1, 6]
        assert all(
            d.severity == types.DiagnosticSeverity.Hint and d.data["sessionId"] == sid
            for d in hints
        )
        actions = await editor.code_actions(uri, hints[1].range, [hints[1]])
        await editor.run(titled(actions, "Reject this change"))

        def hunk_lines() -> list[int]:
            return [
                d.range.start.line
                for d in editor.handoff_diagnostics(uri)
                if "hunkId" in (d.data or {})
            ]

        await editor.wait_for(lambda: hunk_lines() == [1], "one hint left")
        # a client that drops `data` still gets the actions of the hunk under the cursor
        actions = await editor.code_actions(uri, rng(1, 3, 1, 3))
        result = await editor.run(titled(actions, "Accept this change"))
        assert result == {"applied": True, "conflicts": 0}
        assert editor.text(uri) == typed.replace("    return a + b", "    return a + b  # sum")
        await editor.wait_for(lambda: not editor.handoff_diagnostics(uri), "every diagnostic to go")
        actions = await editor.code_actions(uri, ready.range)
        assert not any(a.title.startswith("Handoff: Follow up") for a in actions)  # it is applied
    finally:
        await editor.stop()
