"""What the editor sees while sessions run: the list follows a running session's steps, and a
configuration edit counts for the very next delegation."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from handoff.offline_model import ScriptedModel

from tests.support.agents import trust_repo
from tests.support.lsp_client import Editor

WHOLE = {"start": {"line": 0, "character": 0}, "end": {"line": 2, "character": 0}}


async def test_the_list_shows_the_steps_of_a_running_session(caps, repo: Path):
    gate = threading.Event()
    with ScriptedModel() as model:
        model.tool_call("read_file", {"path": "app.py"}).tool_call("finish", {"summary": "read it"})
        # The second request (after step 1) waits until the test has seen the list.
        model.on_request = lambda body: len(model.requests) == 2 and gate.wait(60)
        editor = await Editor.start(
            caps,
            repo,
            env={
                "HANDOFF_MODEL": "openai/scripted-model",
                "HANDOFF_API_BASE": model.url,
                "HANDOFF_API_KEY": "sk-test-not-a-secret",
            },
        )
        try:
            uri = editor.open(repo / "app.py")
            sid = (
                await editor.command(
                    "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": "read app.py"}
                )
            )["sessionId"]
            running = await editor.wait_for(
                lambda: next(
                    (
                        s
                        for items in editor.lists
                        for s in items
                        if s["id"] == sid and s["state"] == "running" and s["steps"] >= 1
                    ),
                    None,
                ),
                "the list to show step 1 of the running session",
                timeout=120,
            )
            assert running["agent"] == "builtin"
            gate.set()
            ready = await editor.wait_state(sid, "ready", "failed", timeout=120)
            assert ready["state"] == "ready" and ready["steps"] == 2, ready
        finally:
            gate.set()
            await editor.stop()
    assert editor.check_stdout() > 3


async def test_a_configuration_edit_counts_for_the_next_delegation(editor, agent, repo: Path):
    toml = repo / ".handoff.toml"
    argv = json.dumps(agent.argv())
    agent.configure()
    text = f'agent = "aaaa"\n[agents.aaaa]\ncommand = {argv}\n[agents.bbbb]\ncommand = {argv}\n'
    for trusted in (
        text.replace('agent = "aaaa"', 'agent = "bbbb"'),
        text,
    ):  # both, as a developer would
        toml.write_text(trusted)
        trust_repo(repo)
    uri = editor.open(repo / "app.py")

    async def delegate() -> dict:
        sid = (
            await editor.command(
                "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": "x"}
            )
        )["sessionId"]
        return await editor.wait_state(sid, "ready", "failed")

    assert (await delegate())["agent"] == "aaaa"
    st = toml.stat()
    toml.write_text(text.replace('agent = "aaaa"', 'agent = "bbbb"'))  # the same size
    os.utime(toml, ns=(st.st_atime_ns, st.st_mtime_ns))  # and mtime: only ctime tells
    assert (await delegate())["agent"] == "bbbb"


async def test_an_origin_diagnostic_counts_lines_as_lsp_does(editor, agent, repo: Path):
    """A form feed (or U+2028) ends no line in LSP: the origin diagnostic stays on its line."""
    agent.configure(wait=True)
    page = "a = 1\f# page two \u2028 still line 0\nb = 22\n# the task is here\n"
    (repo / "paged.py").write_text(page)
    uri = editor.open(repo / "paged.py")
    sid = (
        await editor.command(
            "handoff.delegate",
            {
                "uri": uri,
                "range": {"start": {"line": 2, "character": 0}, "end": {"line": 3, "character": 0}},
                "instruction": "x",
            },
        )
    )["sessionId"]
    d = await editor.wait_diagnostic(uri, lambda d: d.data["sessionId"] == sid, "the origin")
    assert (d.range.start.line, d.range.start.character) == (2, 0)
    assert (d.range.end.line, d.range.end.character) == (2, len("# the task is here"))
    agent.release(sid)
    await editor.wait_state(sid, "ready", "failed")
