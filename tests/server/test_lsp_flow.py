"""The main flow through a real client: delegate a selection, watch it, apply it."""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types

from tests.support.git import git
from tests.support.lsp_fixtures import rng, titled

APP = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"


async def test_selection_to_applied_edit(editor, agent, repo: Path):
    # The buffer holds a comment that was never saved: it is the task, and the agent sees it.
    buffer = APP.replace("def sub", "# Document what sub returns.\ndef sub")
    agent.configure(
        runs=[[["replace", "app.py", "    return a - b", '    """a minus b"""\n    return a - b']]],
        read=["app.py"],
        wait=True,
        summary="documented sub",
    )
    uri = editor.open(repo / "app.py", buffer)

    lint = types.Diagnostic(
        range=rng(6, 4, 6, 16),
        message="'b' is possibly unbound",
        severity=types.DiagnosticSeverity.Error,
        source="pyright",
    )
    actions = await editor.code_actions(uri, rng(5, 0, 7, 0), [lint])
    action = titled(actions, "Delegate to background agent")
    assert action.command.command == "handoff.delegate"
    sid = (await editor.run(action))["sessionId"]

    running = await editor.wait_state(sid, "running")
    assert running["uri"] == uri and running["title"] == "Document what sub returns."
    diag = await editor.wait_diagnostic(
        uri, lambda d: d.data["state"] == "running", "running diagnostic"
    )
    assert diag.severity == types.DiagnosticSeverity.Information and diag.range.start.line == 5
    await editor.wait_for(lambda: agent.started(sid), "the agent to start")
    [run] = agent.runs(sid)
    assert run["seen"]["app.py"] == buffer  # the unsaved buffer, not the disk
    assert run["task"] == "Document what sub returns."
    assert (
        "line 7: error: [pyright] 'b' is possibly unbound" in run["brief"]
    )  # what the editor showed

    agent.release(sid)
    ready = await editor.wait_state(sid, "ready")
    assert ready["summary"] == "documented sub"
    assert ready["filesChanged"] == [(Path(ready["repoRoot"]) / "app.py").as_uri()]
    assert "queued" not in editor.states(sid)[editor.states(sid).index("running") :]
    diag = await editor.wait_diagnostic(
        uri, lambda d: d.data["state"] == "ready", "ready diagnostic"
    )
    assert diag.severity == types.DiagnosticSeverity.Information
    assert "app.py" in diag.message and "documented sub" in diag.message

    actions = await editor.code_actions(uri, diag.range, [diag])
    titles = [a.title for a in actions]
    for label in ("Apply", "Show", "Follow up", "Discard"):
        assert any(t.startswith(f"Handoff: {label}") for t in titles), titles
    result = await editor.run(titled(actions, "Handoff: Apply"))
    assert result == {"applied": True, "conflicts": 0}
    assert editor.text(uri) == buffer.replace(
        "    return a - b", '    """a minus b"""\n    return a - b'
    )
    assert (repo / "app.py").read_text() == APP  # the client applied it to the buffer, unsaved

    applied = await editor.wait_state(sid, "applied")
    assert not Path(applied["worktree"]).exists()
    assert git(repo, "branch", "--list", f"handoff/{sid}") == ""
    assert git(repo, "for-each-ref", f"refs/handoff/{sid}") == ""
    await editor.wait_for(lambda: not editor.handoff_diagnostics(uri), "the diagnostic to go")
    edit = editor.edits[-1]
    change = edit.document_changes[0]
    assert change.text_document.version == 1  # versioned against the open buffer
    assert (
        len(change.edits) == 1 and change.edits[0].range.start.line == 6
    )  # minimal, not whole-file
    if editor.caps == "visual_studio_code":
        assert all(isinstance(e, types.AnnotatedTextEdit) for e in change.edits)
        assert edit.change_annotations[change.edits[0].annotation_id].needs_confirmation
    assert editor.check_stdout() > 5


async def test_todo_code_actions(editor, agent, repo: Path):
    agent.configure(runs=[[["replace", "app.py", "return a - b", "return abs(a - b)"]]])
    text = APP.replace("def sub", "# TODO: return the absolute difference\ndef sub").replace(
        "def add", "// not python, still a comment\n# FIXME(bob): overflow?\ndef add"
    )
    (repo / "app.py").write_text(text)
    uri = editor.open(repo / "app.py")
    lines = text.splitlines()
    todo_line = lines.index("# TODO: return the absolute difference")

    actions = await editor.code_actions(
        uri, rng(todo_line, 3, todo_line, 3)
    )  # a cursor, no selection
    assert not any(a.title == "Delegate to background agent" for a in actions)
    action = titled(actions, "Delegate TODO to background agent: return the absolute difference")
    sid = (await editor.run(action))["sessionId"]
    ready = await editor.wait_state(sid, "ready")
    assert ready["title"] == "return the absolute difference"
    [run] = agent.runs(sid)
    assert run["task"].startswith("return the absolute difference")
    assert "remove that comment" in run["task"].lower()
    assert run["range"] == f"{todo_line}:2-{todo_line}:38"  # the TODO comment itself

    every = titled(actions, "Delegate all 2 TODOs in this file")
    ids = (await editor.run(every))["sessionIds"]
    assert len(ids) == 2
    sessions = [await editor.wait_state(i, "ready", "failed") for i in ids]
    assert [s["title"] for s in sessions] == ["overflow?", "return the absolute difference"]


async def test_todo_agent_on_save_starts_one_session(editor, agent, repo: Path):
    agent.configure()
    (repo / "old.py").write_text("# TODO(agent): written before the editor opened it\n")
    old = editor.open(repo / "old.py")
    editor.save(old)  # markers that were there when the file was opened start nothing
    uri = editor.open(repo / "app.py")
    editor.type(uri, "# TODO(agent): add a mul function\n" + APP)
    editor.save(uri)
    first = await editor.wait_for(lambda: editor.lists and editor.lists[-1], "a session")
    [s] = first
    assert s["title"] == "add a mul function" and s["uri"] == uri
    editor.save(uri)  # again: nothing new
    editor.type(uri, "# TODO(agent): add a mul function\n" + APP + "\nx = 1\n")
    editor.save(uri)
    editor.type(uri, "# TODO(agent): add a mul function\n" + APP + "\n# TODO(agent): add div\n")
    editor.save(uri)  # a new marker: one more session, for it alone
    await editor.wait_for(lambda: len(editor.lists[-1]) == 2, "the second session")
    listed = (await editor.command("handoff.listSessions", {}))["sessions"]
    assert sorted(s["title"] for s in listed) == ["add a mul function", "add div"]
    for s in listed:
        await editor.wait_state(s["id"], "ready")


async def test_refused_edit_is_merged_again_against_the_new_text(editor, agent, repo: Path):
    agent.configure(runs=[[["replace", "app.py", "return a - b", "return a - b  # agent"]]])
    uri = editor.open(repo / "app.py")
    sid = (
        await editor.command(
            "handoff.delegate",
            {
                "uri": uri,
                "range": {"start": {"line": 4, "character": 0}, "end": {"line": 6, "character": 0}},
                "instruction": "mark the subtraction",
            },
        )
    )["sessionId"]
    await editor.wait_state(sid, "ready")
    typed = APP.replace("def add", "import math\n\n\ndef add")

    def developer_types_first(edit):  # the buffer moves while the edit is on its way
        if len(editor.edits) == 1:
            editor.type(uri, typed)

    editor.on_apply = developer_types_first
    result = await editor.command("handoff.apply", {"sessionId": sid})
    assert result == {"applied": True, "conflicts": 0}
    assert len(editor.edits) == 2
    assert editor.text(uri) == typed.replace("return a - b", "return a - b  # agent")
    assert editor.edits[1].document_changes[0].text_document.version == 2


async def test_created_deleted_and_renamed_files(editor, agent, repo: Path):
    (repo / "notes.txt").write_text("keep\nthese\nnotes\n")
    agent.configure(
        runs=[
            [
                ["write", "pkg/mul.py", "def mul(a, b):\n    return a * b\n"],
                ["delete", "README.md"],
                ["rename", "notes.txt", "docs/notes.txt"],
            ]
        ]
    )
    uri = editor.open(repo / "app.py")
    sid = (
        await editor.command(
            "handoff.delegate",
            {
                "uri": uri,
                "range": {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}},
                "instruction": "add mul, drop the readme, move the notes",
            },
        )
    )["sessionId"]
    ready = await editor.wait_state(sid, "ready")
    assert len(ready["filesChanged"]) == 3

    preview = (await editor.command("handoff.preview", {"sessionId": sid}))["files"]
    by_name = {Path(f["uri"]).name: f for f in preview}
    assert by_name["mul.py"]["content"] == "def mul(a, b):\n    return a * b\n"
    assert by_name["README.md"]["content"] is None

    assert (await editor.command("handoff.show", {"sessionId": sid})) == {}
    shown = editor.client.shown_documents[-1]
    report = Path(shown.uri[len("file://") :]).read_text()
    assert "pkg/mul.py" in report and "add mul, drop the readme" in report

    assert (await editor.command("handoff.apply", {"sessionId": sid}))["applied"] is True
    assert (repo / "pkg" / "mul.py").read_text() == "def mul(a, b):\n    return a * b\n"
    assert not (repo / "README.md").exists()
    assert (repo / "docs" / "notes.txt").read_text() == "keep\nthese\nnotes\n"
    assert not (repo / "notes.txt").exists()
    kinds = [type(c).__name__ for c in editor.edits[-1].document_changes]
    assert {"CreateFile", "DeleteFile", "RenameFile"} <= set(kinds)
    await editor.wait_state(sid, "applied")


async def test_apply_sent_the_moment_a_session_is_ready(editor, agent, repo: Path):
    """An apply that arrives while the conflict check of a session that just became ready runs
    is not held up by it (the check gives way, and runs again when the apply leaves the session
    ready): the developer still gets the conflict's diagnostic and count."""
    agent.configure(
        runs=[[["replace", "app.py", "    return a - b", "    return a - b  # agent"]]], wait=True
    )
    uri = editor.open(repo / "app.py")
    sid = (
        await editor.command(
            "handoff.delegate",
            {
                "uri": uri,
                "range": {"start": {"line": 4, "character": 0}, "end": {"line": 6, "character": 0}},
                "instruction": "mark the subtraction",
            },
        )
    )["sessionId"]
    await editor.wait_state(sid, "running")
    mine = APP.replace("    return a - b", "    return -(b - a)")
    editor.type(uri, mine)
    agent.release(sid)
    await editor.wait_state(sid, "ready")
    result = await editor.command("handoff.apply", {"sessionId": sid})  # at once
    assert result == {"applied": False, "conflicts": 1}
    assert editor.edits == [] and editor.text(uri) == mine
    diag = await editor.wait_diagnostic(
        uri, lambda d: (d.data or {}).get("conflict"), "conflict diagnostic"
    )
    assert diag.range.start.line == mine.splitlines().index("    return -(b - a)")
    await editor.wait_diagnostic(
        uri,
        lambda d: d.data["state"] == "ready" and "1 conflict" in d.message,
        "ready diagnostic with its conflict",
    )
    await editor.wait_for(lambda: editor.session(sid)["conflicts"] == 1, "the conflict count")
    # and once the developer takes their change back, it applies
    editor.type(uri, APP)
    result = await editor.command("handoff.apply", {"sessionId": sid})
    assert result == {"applied": True, "conflicts": 0}
    assert editor.text(uri) == APP.replace("    return a - b", "    return a - b  # agent")
