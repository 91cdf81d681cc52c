"""Unit tests of the server's pure parts: moving anchors, settings sources, task reading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from handoff.agent import config as config_mod
from handoff.server import delegation
from handoff.server.anchors import Anchor, remap, shift
from handoff.server.settings import Settings, unwrap


def anchor(l1: int, c1: int, l2: int, c2: int) -> Anchor:
    return Anchor("file:///a.py", "s", (l1, c1), (l2, c2))


@pytest.mark.parametrize(
    "change, expected",
    [
        (((0, 0), (0, 0), "x\ny\n"), ((7, 0), (9, 0))),  # lines inserted above
        (((5, 0), (5, 0), "new\n"), ((6, 0), (8, 0))),  # a line typed right at the start
        (((1, 0), (3, 0), ""), ((3, 0), (5, 0))),  # lines deleted above
        (((6, 0), (6, 0), "a\nb\n"), ((5, 0), (9, 0))),  # lines typed inside: it grows
        (((8, 0), (9, 0), ""), ((5, 0), (7, 0))),  # below: nothing moves
        (((5, 0), (5, 4), "xy"), ((5, 0), (7, 0))),  # an edit on its first line
    ],
)
def test_shift(change, expected):
    a = anchor(5, 0, 7, 0)
    shift(a, *change)
    assert (a.start, a.end) == expected


def test_shift_on_the_same_line_counts_code_units():
    a = anchor(3, 10, 3, 12)
    shift(a, (3, 0), (3, 0), "😀", "utf-16")
    assert (a.start, a.end) == ((3, 12), (3, 14))


def test_remap_for_whole_document_changes():
    a = anchor(2, 0, 3, 0)
    old = "a\nb\nc\nd\n"
    assert remap(a, old, "new\n" + old)
    assert (a.start, a.end) == ((3, 0), (4, 0))


def test_settings_sources(tmp_path: Path):
    """The editor's layers, in order, as they travel to the daemon (which merges them with the
    repository's files and the environment: tests/agent/test_config.py)."""

    class FakeServer:
        pass

    s = Settings(FakeServer())  # type: ignore[arg-type]
    s.init_options = {"handoff": {"maxParallel": 3, "autoApply": True}}
    s.pulled = {"": {"autoApply": False}, tmp_path.as_uri(): {"maxCostUsd": 0.5}}
    params = s.request_params(tmp_path)
    assert params["overrides"] == [
        ["initializationOptions", {"maxParallel": 3, "autoApply": True}],
        ["workspace/configuration", {"maxCostUsd": 0.5}],
    ]
    assert params["env"]["HANDOFF_STATE_DIR"] == os.environ["HANDOFF_STATE_DIR"]
    assert s.request_params(None)["overrides"][1] == [
        "workspace/configuration",
        {"autoApply": False},
    ]
    cfg, messages = config_mod.load(tmp_path, overrides=[tuple(o) for o in params["overrides"]])
    assert (cfg.maxParallel, cfg.maxCostUsd, cfg.autoApply) == (3, 0.5, True) and messages == []


def test_unwrap_accepts_both_shapes():
    assert unwrap({"handoff": {"agent": "x"}}) == {"agent": "x"}
    assert unwrap({"agent": "x"}) == {"agent": "x"}
    assert unwrap(None) is None


def test_task_of_a_selection():
    text = "x = 1\n# FIXME: slow\ny = 2\n# TODO: fast\n"
    instruction, title = delegation.task_of(
        text, {"start": {"line": 1, "character": 0}, "end": {"line": 4, "character": 0}}, "a.py"
    )
    assert title == "slow"
    assert "- slow (the FIXME comment at line 2)" in instruction
    assert "- fast (the TODO comment at line 4)" in instruction
    with pytest.raises(delegation.NoTask):
        delegation.task_of("x = 1\n", None, "a.py")


def test_format_diagnostics_keeps_those_in_range():
    diags = [
        {
            "range": {"start": {"line": 3}},
            "message": "bad",
            "severity": 2,
            "source": "ruff",
            "code": "E1",
        },
        {"range": {"start": {"line": 9}}, "message": "far away"},
        {"range": {"start": {"line": 3}}, "message": "ours", "source": "handoff"},
        "already text",
    ]
    rng = {"start": {"line": 2, "character": 0}, "end": {"line": 5, "character": 0}}
    assert delegation.format_diagnostics(diags, rng) == [
        "line 4: warning: [ruff] bad (E1)",
        "already text",
    ]


def test_plain_results_are_written_as_cattrs_would_write_them():
    """Plain-JSON results and params skip cattrs; what goes on the wire is the same JSON."""
    import json

    from handoff.agent.session import Session, State
    from handoff.server.server import create_server
    from lsprotocol import types
    from pygls.protocol import LanguageServerProtocol
    from pygls.protocol.json_rpc import JsonRPCNotification, JsonRPCResponseMessage

    protocol = create_server().protocol
    session = Session(
        id="s1",
        repoRoot="/r",
        instruction="do it",
        title="do it",
        agent="builtin",
        state=State.READY,
        filesChanged=["file:///r/a.py"],
        range={"start": {"line": 1, "character": 0}, "end": {"line": 2, "character": 3}},
    )
    action = types.CodeAction(
        title="Apply",
        kind="quickfix.handoff",
        diagnostics=[
            types.Diagnostic(
                range=types.Range(
                    start=types.Position(line=1, character=0),
                    end=types.Position(line=1, character=4),
                ),
                message="m",
                severity=types.DiagnosticSeverity.Information,
                data={"sessionId": "s1"},
            )
        ],
        command=types.Command(
            title="Apply", command="handoff.apply", arguments=[{"sessionId": "s1"}]
        ),
    )
    messages = [
        JsonRPCResponseMessage(id=1, jsonrpc="2.0", result={"sessions": [session.to_wire()]}),
        types.ExecuteCommandResponse(id=2, result={"applied": True, "conflicts": 0}),
        JsonRPCNotification(
            method="handoff/sessions", jsonrpc="2.0", params={"sessions": [session.to_wire()]}
        ),
        types.CodeActionResponse(id=3, result=[action]),
        JsonRPCResponseMessage(id=4, jsonrpc="2.0", result=None),
        types.PublishDiagnosticsNotification(
            params=types.PublishDiagnosticsParams(uri="file:///r/a.py", diagnostics=[])
        ),
    ]
    for message in messages:
        ours = json.dumps(message, default=protocol._serialize_message)
        theirs = json.dumps(
            message, default=lambda d: LanguageServerProtocol._serialize_message(protocol, d)
        )
        assert json.loads(ours) == json.loads(theirs)


def test_session_lists_are_sent_from_each_sessions_kept_json():
    """listSessions and handoff/sessions go out as their sessions' kept JSON joined: the same
    message, header included, as encoding the whole list; a session's JSON follows its changes."""
    import json

    from handoff.agent.session import Session, State
    from handoff.server.protocol import RawJSON, session_list
    from handoff.server.server import create_server

    protocol = create_server().protocol
    written: list[bytes] = []

    class Writer:
        def write(self, data: bytes) -> None:
            written.append(data)

    protocol.set_writer(Writer())
    sessions = [
        Session(
            id=f"s{i}",
            title=f"tâche {i}",
            state=State.RUNNING,
            filesChanged=[f"file:///r/{i}.py"],
            range={"start": {"line": i, "character": 0}, "end": {"line": i, "character": 2}},
        )
        for i in range(3)
    ]

    def sent() -> dict:
        head, _, body = written.pop().partition(b"\r\n\r\n")
        assert int(head.split(b"\r\n")[0].split(b":")[1]) == len(body)
        return json.loads(body)

    expected = {"sessions": [s.to_wire() for s in sessions]}
    protocol._send_response(7, session_list(sessions))
    assert sent() == {"jsonrpc": "2.0", "id": 7, "result": expected}
    protocol.notify("handoff/sessions", session_list(sessions))
    assert sent() == {"jsonrpc": "2.0", "method": "handoff/sessions", "params": expected}
    assert json.loads(session_list([])) == {"sessions": []}
    protocol._send_response(
        8, RawJSON('{"note": "écrit tel quel"}')
    )  # not ASCII: the length is in bytes
    assert sent() == {"jsonrpc": "2.0", "id": 8, "result": {"note": "écrit tel quel"}}

    sessions[1].steps, sessions[1].state = 4, State.READY
    protocol.notify("handoff/sessions", session_list(sessions))
    assert sent()["params"]["sessions"][1] == sessions[1].to_wire()
    assert (
        json.loads(sessions[1].to_json())["steps"] == 4
        and json.loads(sessions[1].to_json())["state"] == "ready"
    )


async def test_list_sessions_waits_only_while_repositories_are_being_found():
    """handoff.listSessions is answered in the same turn of the event loop once the workspace's
    repositories are known; before that it returns an awaitable that waits for them."""
    import inspect
    import json

    from handoff.server.commands import LIST
    from handoff.server.server import create_server

    ls = create_server()
    handler = ls.protocol.fm.commands[LIST]
    pending = handler({})
    assert inspect.isawaitable(pending)
    ls.repos.discovered.set()
    assert json.loads(await pending) == {"sessions": []}
    now = handler({})
    assert not inspect.isawaitable(now) and json.loads(now) == {"sessions": []}
