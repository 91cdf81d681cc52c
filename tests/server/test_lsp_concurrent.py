"""The developer keeps editing while the agent works: merges, conflicts, moving diagnostics."""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types

from tests.support.lsp_fixtures import titled

APP = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
AGENT_CHANGE = [["replace", "app.py", "    return a - b", "    return a - b  # by the agent"]]


async def start(editor, agent, repo: Path) -> tuple[str, str]:
    agent.configure(runs=[AGENT_CHANGE], wait=True)
    uri = editor.open(repo / "app.py")
    sid = (
        await editor.command(
            "handoff.delegate",
            {
                "uri": uri,
                "range": {"start": {"line": 4, "character": 0}, "end": {"line": 6, "character": 0}},
                "instruction": "comment the subtraction",
            },
        )
    )["sessionId"]
    await editor.wait_state(sid, "running")
    return uri, sid


async def test_disjoint_edits_both_survive(editor, agent, repo: Path):
    uri, sid = await start(editor, agent, repo)
    mine = APP.replace("    return a + b", "    return b + a  # mine")
    editor.type(uri, mine)
    agent.release(sid)
    await editor.wait_state(sid, "ready")
    result = await editor.command("handoff.apply", {"sessionId": sid})
    assert result == {"applied": True, "conflicts": 0}
    assert editor.text(uri) == mine.replace("    return a - b", "    return a - b  # by the agent")


async def test_overlapping_edit_is_a_conflict_diagnostic_and_no_edit(editor, agent, repo: Path):
    uri, sid = await start(editor, agent, repo)
    mine = "import os\n" + APP.replace("    return a - b", "    return -(b - a)")
    editor.type(uri, mine)
    agent.release(sid)
    await editor.wait_state(sid, "ready")
    # shown as soon as the result is ready, before anyone tries to apply it
    early = await editor.wait_diagnostic(
        uri, lambda d: (d.data or {}).get("conflict"), "conflict diagnostic"
    )
    origin = await editor.wait_diagnostic(
        uri, lambda d: d.data["state"] == "ready", "ready diagnostic"
    )
    assert origin.severity == types.DiagnosticSeverity.Warning and "1 conflict" in origin.message

    result = await editor.command("handoff.apply", {"sessionId": sid})
    assert result == {"applied": False, "conflicts": 1}
    assert editor.edits == [] and editor.text(uri) == mine
    diag = await editor.wait_diagnostic(
        uri, lambda d: (d.data or {}).get("conflict"), "conflict diagnostic"
    )
    assert diag.range == early.range
    assert diag.severity == types.DiagnosticSeverity.Warning
    assert diag.range.start.line == mine.splitlines().index("    return -(b - a)")
    assert "conflict" in diag.message
    s = editor.session(sid)
    assert s["state"] == "ready" and s["conflicts"] == 1

    actions = await editor.code_actions(uri, diag.range, [diag])
    titled(actions, "Handoff: Show")
    result = await editor.run(titled(actions, "Handoff: Apply with conflict markers"))
    assert result == {"applied": True, "conflicts": 1}
    text = editor.text(uri)
    assert "<<<<<<<" in text and "    return -(b - a)" in text and "# by the agent" in text
    assert text.startswith("import os\ndef add")
    await editor.wait_state(sid, "applied")
    await editor.wait_for(
        lambda: not editor.handoff_diagnostics(uri), "the conflict diagnostic to go"
    )


async def test_diagnostics_follow_the_text(editor, agent, repo: Path):
    uri, sid = await start(editor, agent, repo)
    diag = await editor.wait_diagnostic(
        uri, lambda d: d.data["sessionId"] == sid, "running diagnostic"
    )
    assert diag.range.start.line == 4
    editor.type(uri, "import os\nimport sys\n\n" + APP)  # three lines above the origin
    moved = await editor.wait_diagnostic(
        uri, lambda d: d.range.start.line == 7, "the diagnostic to move"
    )
    assert moved.data["state"] == "running"
    await editor.wait_for(
        lambda: editor.session(sid)["range"]["start"]["line"] == 7, "the session range"
    )
    editor.type(uri, "import os\n\n" + APP)  # one line removed above it
    await editor.wait_diagnostic(
        uri, lambda d: d.range.start.line == 6, "the diagnostic to move back"
    )
    agent.release(sid)
    ready = await editor.wait_diagnostic(
        uri, lambda d: d.data["state"] == "ready", "ready diagnostic"
    )
    assert ready.range.start.line == 6
    result = await editor.command("handoff.apply", {"sessionId": sid})
    assert result["applied"]
    assert editor.text(uri) == "import os\n\n" + APP.replace("a - b", "a - b  # by the agent")


async def test_conflicts_follow_the_developers_later_edits(editor, agent, repo: Path):
    """A ready session's conflicts are merged again after the developer edits its files: undoing
    the overlapping edit makes the conflict go (and apply works), redoing it brings it back."""
    uri, sid = await start(editor, agent, repo)
    mine = APP.replace("    return a - b", "    return -(b - a)")
    editor.type(uri, mine)
    agent.release(sid)
    await editor.wait_state(sid, "ready")
    await editor.wait_diagnostic(
        uri, lambda d: (d.data or {}).get("conflict"), "conflict diagnostic"
    )

    editor.type(uri, APP)  # the developer takes their edit back
    await editor.wait_for(
        lambda: not any((d.data or {}).get("conflict") for d in editor.handoff_diagnostics(uri)),
        "the conflict diagnostic to go",
    )
    ready = await editor.wait_diagnostic(
        uri, lambda d: d.data["state"] == "ready", "ready diagnostic"
    )
    assert ready.severity == types.DiagnosticSeverity.Information
    await editor.wait_for(
        lambda: editor.session(sid)["conflicts"] == 0, "the session's conflicts to be 0"
    )

    editor.type(uri, mine)  # and makes it again: the conflict is back before any apply
    diag = await editor.wait_diagnostic(
        uri, lambda d: (d.data or {}).get("conflict"), "conflict diagnostic again"
    )
    assert diag.range.start.line == mine.splitlines().index("    return -(b - a)")
    await editor.wait_for(
        lambda: editor.session(sid)["conflicts"] == 1, "the session's conflicts to be 1"
    )
    assert editor.edits == []

    editor.type(uri, APP)
    await editor.wait_for(
        lambda: editor.session(sid)["conflicts"] == 0, "the session's conflicts to be 0 again"
    )
    assert await editor.command("handoff.apply", {"sessionId": sid}) == {
        "applied": True,
        "conflicts": 0,
    }
    assert editor.text(uri) == APP.replace("    return a - b", "    return a - b  # by the agent")
