"""Hunk-by-hunk review through a real client over stdio: preview, accept some, reject some (with a
reason: the agent is followed up with it), and what the developer typed meanwhile."""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types

from tests.support.git import git
from tests.support.lsp_fixtures import titled

APP = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
SUM = ("app.py", "    return a + b", "    return a + b  # sum")
DIFF = ("app.py", "    return a - b", "    return a - b  # difference")
BOTH = APP.replace(SUM[1], SUM[2]).replace(DIFF[1], DIFF[2])
WHOLE = {"start": {"line": 0, "character": 0}, "end": {"line": 6, "character": 0}}


async def ready_session(editor, agent, repo: Path, runs=None, read=None) -> tuple[str, str]:
    agent.configure(runs=runs or [[["replace", *SUM], ["replace", *DIFF]]], read=read or [])
    uri = editor.open(repo / "app.py")
    sid = (
        await editor.command(
            "handoff.delegate", {"uri": uri, "range": WHOLE, "instruction": "comment the results"}
        )
    )["sessionId"]
    await editor.wait_state(sid, "ready")
    return sid, uri


async def hunks(editor, sid: str) -> list[dict]:
    files = (await editor.command("handoff.preview", {"sessionId": sid}))["files"]
    return [h for f in files for h in f["hunks"]]


async def test_preview_hunks_then_accept_one_at_a_time(editor, agent, repo: Path):
    sid, uri = await ready_session(editor, agent, repo)
    first, second = await hunks(editor, sid)
    assert first["range"] == {
        "start": {"line": 1, "character": 0},
        "end": {"line": 2, "character": 0},
    }
    assert (first["oldText"], first["newText"]) == (
        "    return a + b\n",
        "    return a + b  # sum\n",
    )
    assert (
        second["range"]["start"]["line"] == 5
        and second["newText"] == "    return a - b  # difference\n"
    )
    assert [h["id"] for h in await hunks(editor, sid)] == [first["id"], second["id"]]  # stable

    # one Hint diagnostic per hunk, with its own code actions
    diag = await editor.wait_diagnostic(
        uri, lambda d: (d.data or {}).get("hunkId") == first["id"], "hunk hint"
    )
    assert diag.severity == types.DiagnosticSeverity.Hint and diag.range.start.line == 1
    assert "# sum" in diag.message
    actions = await editor.code_actions(uri, diag.range, [diag])
    accept = titled(actions, "Accept this change")
    assert accept.command.arguments[0] == {"sessionId": sid, "hunks": [first["id"]]}
    titled(actions, "Reject this change")
    assert await editor.run(accept) == {"applied": True, "conflicts": 0}
    assert editor.text(uri) == APP.replace(SUM[1], SUM[2])  # that change only

    left = await editor.wait_for(
        lambda: (s := editor.session(sid)) and s["hunks"] == 1 and s, "one hunk left"
    )
    assert (
        left["state"] == "ready"
        and "applyHunks" in left["actions"]
        and "followUp" in left["actions"]
    )
    await editor.wait_for(
        lambda: (
            [
                d.data["hunkId"]
                for d in editor.handoff_diagnostics(uri)
                if "hunkId" in (d.data or {})
            ]
            == [second["id"]]
        ),
        "the other hint only",
    )
    assert [h["id"] for h in await hunks(editor, sid)] == [second["id"]]

    assert await editor.command("handoff.apply", {"sessionId": sid, "hunks": [second["id"]]}) == {
        "applied": True,
        "conflicts": 0,
    }
    assert editor.text(uri) == BOTH
    applied = await editor.wait_state(sid, "applied")
    assert applied["actions"] == ["show"]  # no follow-up on an applied session
    assert git(repo, "branch", "--list", f"handoff/{sid}") == ""
    await editor.wait_for(lambda: not editor.handoff_diagnostics(uri), "the hints to go")


async def test_reject_takes_the_change_out_of_the_result(editor, agent, repo: Path):
    sid, uri = await ready_session(editor, agent, repo)
    first, second = await hunks(editor, sid)
    diag = await editor.wait_diagnostic(
        uri, lambda d: (d.data or {}).get("hunkId") == first["id"], "hunk hint"
    )
    actions = await editor.code_actions(uri, diag.range, [diag])
    assert await editor.run(titled(actions, "Reject this change")) == {}
    assert editor.text(uri) == APP  # nothing applied
    assert [h["id"] for h in await hunks(editor, sid)] == [second["id"]]
    result = (await editor.wait_state(sid, "ready"))["resultCommit"]
    assert git(repo, "show", f"{result}:app.py") == APP.replace(DIFF[1], DIFF[2])

    assert (await editor.command("handoff.apply", {"sessionId": sid}))["applied"] is True
    assert editor.text(uri) == APP.replace(DIFF[1], DIFF[2])
    await editor.wait_state(sid, "applied")


async def test_rejecting_every_change_discards_the_session(editor, agent, repo: Path):
    sid, uri = await ready_session(editor, agent, repo)
    ids = [h["id"] for h in await hunks(editor, sid)]
    assert await editor.command("handoff.reject", {"sessionId": sid, "hunks": ids}) == {}
    await editor.wait_state(sid, "discarded")
    assert editor.text(uri) == APP


async def test_reject_with_a_reason_follows_up_with_it(editor, agent, repo: Path):
    runs = [
        [["replace", *SUM], ["replace", *DIFF]],
        [["replace", "app.py", "    return a + b", "    return b + a"]],
    ]
    sid, uri = await ready_session(editor, agent, repo, runs=runs, read=["app.py"])
    first, second = await hunks(editor, sid)
    reason = "no comments on add; swap the operands instead"
    assert (
        await editor.command(
            "handoff.reject", {"sessionId": sid, "hunks": [first["id"]], "reason": reason}
        )
        == {}
    )
    await editor.wait_for(lambda: len(agent.runs(sid)) == 2, "the follow-up run")
    await editor.wait_for(
        lambda: editor.states(sid)[-1] == "ready" and "queued" in editor.states(sid), "ready again"
    )
    task = agent.runs(sid)[1]["task"]
    assert task.startswith("The developer rejected this change:")
    assert "Reason: " + reason in task
    assert "+    return a + b  # sum" in task and "app.py, line 2" in task
    # the follow-up works on the result without the rejected change
    assert agent.runs(sid)[1]["seen"]["app.py"] == APP.replace(DIFF[1], DIFF[2])
    again = await hunks(editor, sid)
    assert [h["newText"] for h in again] == [
        "    return b + a\n",
        "    return a - b  # difference\n",
    ]
    assert again[1]["id"] == second["id"]
    assert (await editor.command("handoff.apply", {"sessionId": sid}))["applied"] is True
    assert editor.text(uri) == APP.replace("return a + b", "return b + a").replace(DIFF[1], DIFF[2])


async def test_hunks_follow_the_developers_edits(editor, agent, repo: Path):
    sid, uri = await ready_session(editor, agent, repo)
    first, second = await hunks(editor, sid)
    editor.type(uri, "import math\n\n" + APP)  # lines above: the hunks move, their ids stay
    moved = await hunks(editor, sid)
    assert [h["id"] for h in moved] == [first["id"], second["id"]]
    assert [h["range"]["start"]["line"] for h in moved] == [3, 7]

    # the developer edits the lines of the second hunk: it conflicts now; the first is still there
    edited = "import math\n\n" + APP.replace("return a - b", "return math.fsum([a, -b])")
    editor.type(uri, edited)
    files = (await editor.command("handoff.preview", {"sessionId": sid}))["files"]
    [f] = files
    assert f["action"] == "conflict" and f["conflicts"] == 1
    assert [h["id"] for h in f["hunks"]] == [first["id"]]
    try:
        await editor.command("handoff.apply", {"sessionId": sid, "hunks": [second["id"]]})
    except Exception as exc:  # the JSON-RPC error the editor shows
        assert "look at its changes again" in str(exc)
    else:
        raise AssertionError("a hunk that is gone was applied")
    assert (await editor.command("handoff.apply", {"sessionId": sid, "hunks": [first["id"]]}))[
        "applied"
    ]
    assert editor.text(uri) == edited.replace(SUM[1], SUM[2])
    s = await editor.wait_for(
        lambda: (s := editor.session(sid)) and s["hunks"] == 0 and s, "no hunk left"
    )
    assert s["state"] == "ready"  # the conflict is left to resolve
    await editor.wait_diagnostic(uri, lambda d: (d.data or {}).get("conflict"), "the conflict")
