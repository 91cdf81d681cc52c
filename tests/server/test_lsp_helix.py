"""A bare LSP client, as Helix is: no change annotations, no work-done progress, no handler
for custom notifications. Everything must be reachable through code actions and diagnostics."""

from __future__ import annotations

from pathlib import Path

from tests.support.git import git
from tests.support.helix import HELIX_LIKE
from tests.support.lsp_agents import Agent
from tests.support.lsp_client import Editor
from tests.support.lsp_fixtures import rng, titled

APP = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"


async def test_helix_like_client_reaches_applied_result_through_code_actions(
    repo: Path, tmp_path: Path
):
    agent = Agent(repo, tmp_path / "agent")
    agent.configure(
        runs=[[["replace", "app.py", "    return a - b", "    return a - b  # checked"]]],
        summary="checked sub",
    )
    editor = await Editor.start(HELIX_LIKE, repo)
    try:
        # Helix has no input prompt for commands: the comment is the task
        buffer = APP.replace("def sub", "# Mark what sub returns as checked.\ndef sub")
        uri = editor.open(repo / "app.py", buffer)
        actions = await editor.code_actions(uri, rng(5, 0, 7, 0))
        await editor.run(titled(actions, "Delegate to background agent"))

        ready = await editor.wait_diagnostic(
            uri, lambda d: d.data["state"] == "ready", "ready diagnostic"
        )
        assert "checked sub" in ready.message and "app.py" in ready.message
        assert editor.lists == []  # no custom notification was handled
        assert editor.client.progress_reports == {}  # no work-done progress either

        actions = await editor.code_actions(uri, ready.range, [ready])
        result = await editor.run(titled(actions, "Handoff: Apply"))
        assert result == {"applied": True, "conflicts": 0}
        assert editor.text(uri) == buffer.replace("    return a - b", "    return a - b  # checked")
        # no change annotations were sent to a client that does not support them
        [edit] = editor.edits
        assert not edit.change_annotations
        # the diagnostic clears once applied, and nothing is left in git
        await editor.wait_for(lambda: not editor.handoff_diagnostics(uri), "diagnostics to clear")
        assert git(repo, "branch", "--list", "handoff/*") == ""
        assert git(repo, "for-each-ref", "refs/handoff/") == ""
    finally:
        await editor.stop()
