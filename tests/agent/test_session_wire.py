"""``Session.to_wire``: the record as the editor and the store see it."""

from __future__ import annotations

import dataclasses

from handoff.agent.session import Session, State, actions_of


def as_before(s: Session) -> dict:
    """What to_wire returned when it was built on ``dataclasses.asdict``."""
    d = dataclasses.asdict(s)
    d["state"] = s.state.value
    if d["error"] is None:
        del d["error"]
    d["actions"] = actions_of(s)
    return d


def default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING  # a required field


def full_session() -> Session:
    s = Session(
        id="250101120000-abcdef",
        title="Document sub",
        state=State.READY,
        uri="file:///r/app.py",
        range={"start": {"line": 4, "character": 0}, "end": {"line": 6, "character": 3}},
        agent="edit",
        createdAt="2025-01-01T12:00:00Z",
        updatedAt="2025-01-01T12:01:00Z",
        steps=7,
        costUsd=0.0123,
        summary="documented sub",
        filesChanged=["file:///r/app.py", "file:///r/b.py"],
        error="an earlier run failed",
        repoRoot="/r",
        baseCommit="a" * 40,
        resultCommit="b" * 40,
        worktree="/state/wt",
        branch="handoff/x",
        instruction="document it",
        file="app.py",
        pid=123,
        agentPid=456,
        conflicts=2,
        hunks=4,
        runs=3,
        question={
            "toolCall": {"title": "Edit app.py", "kind": "edit", "locations": ["/r/app.py"]},
            "options": [{"optionId": "yes", "name": "Allow", "kind": "allow_once"}],
        },
    )
    unset = [f.name for f in dataclasses.fields(Session) if getattr(s, f.name) == default(f)]
    assert unset == [], f"give every field a value that is not its default: {unset}"
    return s


def test_to_wire_is_what_asdict_gave():
    s = full_session()
    wire = s.to_wire()
    assert wire == as_before(s)
    assert list(wire) == list(as_before(s))  # the same keys in the same order
    assert type(wire["state"]) is str and wire["state"] == "ready"

    bare = Session(id="x", title="t", state=State.QUEUED)
    assert bare.to_wire() == as_before(bare) and "error" not in bare.to_wire()


def test_to_wire_copies_what_is_mutable():
    s = full_session()
    wire = s.to_wire()
    wire["range"]["start"]["line"] = 99
    wire["range"]["end"] = None
    wire["filesChanged"].append("file:///r/c.py")
    assert s.range == {"start": {"line": 4, "character": 0}, "end": {"line": 6, "character": 3}}
    assert s.filesChanged == ["file:///r/app.py", "file:///r/b.py"]


def test_to_wire_follows_every_change():
    s = full_session()
    first = s.to_wire()
    first["title"] = "changed by a caller"  # a caller's own dict: the session's is untouched
    assert s.to_wire()["title"] == s.title
    s.steps, s.state, s.error = 12, State.FAILED, "broke"
    s.filesChanged = [*s.filesChanged, "file:///r/new.py"]
    wire = s.to_wire()
    assert wire == as_before(s)
    assert (wire["steps"], wire["state"], wire["error"]) == (12, "failed", "broke")
    assert wire["filesChanged"][-1] == "file:///r/new.py"
    s.error = None
    assert "error" not in s.to_wire()
