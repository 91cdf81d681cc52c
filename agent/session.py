"""Session records and their state machine.

A :class:`Session` is the wire-shaped record of one delegation (docs/DESIGN.md, ``Session``);
:func:`transition` is the one place a state changes.
"""

from __future__ import annotations

import calendar
import dataclasses
import enum
import json
import secrets
import time
from collections.abc import Callable
from typing import Any


class State(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    READY = "ready"
    APPLIED = "applied"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DISCARDED = "discarded"
    INTERRUPTED = "interrupted"


ACTIVE = frozenset({State.QUEUED, State.RUNNING})
FINAL = frozenset({State.APPLIED, State.DISCARDED})

# Allowed moves. Anything that is not final can be discarded; follow-up and resume
# re-queue a session that has stopped.
_MOVES: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.RUNNING, State.CANCELLED, State.FAILED, State.DISCARDED}),
    State.RUNNING: frozenset(
        {State.READY, State.FAILED, State.CANCELLED, State.INTERRUPTED, State.DISCARDED}
    ),
    State.READY: frozenset({State.APPLIED, State.DISCARDED, State.QUEUED}),
    State.FAILED: frozenset({State.DISCARDED, State.QUEUED}),
    State.CANCELLED: frozenset({State.DISCARDED, State.QUEUED}),
    State.INTERRUPTED: frozenset({State.DISCARDED, State.QUEUED}),
    State.APPLIED: frozenset(),
    State.DISCARDED: frozenset(),
}


class SessionError(Exception):
    """A request about a session that cannot be done; the message is for the developer."""


class TransitionError(ValueError):
    """A state change the session does not allow (e.g. apply on a running session)."""


def new_id() -> str:
    """Short, sortable, unique enough for one machine: time prefix + random suffix."""
    return time.strftime("%y%m%d%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # createdAt / updatedAt, UTC


def now_iso() -> str:
    return time.strftime(ISO_FORMAT, time.gmtime())


def parse_iso(text: str) -> float:
    """Epoch seconds of a time :func:`now_iso` wrote; ValueError if it is not one."""
    return calendar.timegm(time.strptime(text, ISO_FORMAT))


@dataclasses.dataclass
class Session:
    """One delegation. Field names are the wire names (camelCase) of docs/DESIGN.md."""

    id: str
    title: str
    state: State
    uri: str | None = None
    range: dict[str, Any] | None = None  # LSP range {start:{line,character}, end:{...}}
    agent: str = "builtin"
    createdAt: str = dataclasses.field(default_factory=now_iso)
    updatedAt: str = dataclasses.field(default_factory=now_iso)
    steps: int = 0
    costUsd: float = 0.0
    summary: str = ""
    filesChanged: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    # Not on the wire's required list, but kept in the record:
    repoRoot: str = ""
    baseCommit: str = ""
    resultCommit: str = ""
    worktree: str = ""
    branch: str = ""
    instruction: str = ""
    file: str | None = None  # origin file, repository-relative (posix)
    pid: int | None = None  # process that runs the session while running
    agentPid: int | None = None  # process group of an external agent while it runs
    conflicts: int = 0
    hunks: int = 0  # changes left to review (hunks of the last merge against the files as they are)
    runs: int = 0
    # an agent's permission question waiting for the developer (SessionManager.answer), or None:
    # {toolCall: {title, kind, locations}, options: [{optionId, name, kind}]}
    question: dict[str, Any] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        self.__dict__["_version"] = self.__dict__.get("_version", 0) + 1  # the wire form is stale

    def _kept(self, key: str, build: Callable[[], Any]) -> Any:
        """``build()``, kept under ``key`` until the session changes. The version is read before
        building: a change made meanwhile leaves it stale for the next call."""
        version = self.__dict__.get("_version", 0)
        kept = self.__dict__.get(key)
        if kept is None or kept[0] != version:
            kept = self.__dict__[key] = (version, build())
        return kept[1]

    def to_wire(self) -> dict[str, Any]:
        """The session as the editor gets it (what ``dataclasses.asdict`` gives, with the state's
        value). Built once per change, not for every list sent (a fresh dict each call; the
        values inside are shared and must not be changed)."""
        return dict(self._kept("_wire", self._build_wire))

    def _build_wire(self) -> dict[str, Any]:
        d = {name: _copy(getattr(self, name)) for name in _FIELDS}
        d["state"] = self.state.value
        if d["error"] is None:
            del d["error"]
        d["actions"] = actions_of(self)
        return d

    def to_json(self) -> str:
        """:meth:`to_wire` as JSON text (what ``json.dumps`` writes), also built once per change:
        a list of sessions is sent as the sessions' texts joined."""
        text: str = self._kept("_json", lambda: json.dumps(self.to_wire()))
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Session:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["state"] = State(kwargs["state"])
        return cls(**kwargs)


_FIELDS = tuple(f.name for f in dataclasses.fields(Session))

# What may be done with a session in each state (``Session.actions`` on the wire): the one table.
# Clients render it; the server's command handlers refuse what it leaves out.
_ACTIONS: dict[State, tuple[str, ...]] = {
    State.QUEUED: ("show", "cancel", "discard"),
    State.RUNNING: ("show", "cancel", "discard"),
    State.READY: ("apply", "applyHunks", "reject", "show", "followUp", "discard"),
    State.FAILED: ("show", "followUp", "resume", "discard"),
    State.CANCELLED: ("show", "followUp", "resume", "discard"),
    State.INTERRUPTED: ("show", "followUp", "resume", "discard"),
    State.APPLIED: ("show",),
    State.DISCARDED: (),
}


def actions_of(session: Session) -> list[str]:
    """What may be done with ``session`` now: ``apply`` (all of it), ``applyHunks`` / ``reject``
    (some of its changes), ``show``, ``followUp``, ``cancel``, ``discard``, ``resume`` (run the
    last instruction again)."""
    return list(_ACTIONS[session.state])


def allows(session: Session, action: str) -> bool:
    return action in _ACTIONS[session.state]


def _copy(value: Any) -> Any:
    """``value`` with its dicts and lists copied (the record's values are JSON-like)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def transition(session: Session, new: State, *, error: str | None = None) -> None:
    """Move ``session`` to ``new`` or raise :class:`TransitionError`."""
    if new not in _MOVES[session.state]:
        raise TransitionError(
            f"session {session.id} is {session.state.value}; it cannot become {new.value}"
        )
    session.state = new
    if new is not State.READY:
        session.hunks = 0  # counted again (by the front that merges it) when it is ready
    if new in (State.FAILED, State.INTERRUPTED) or error is not None:
        session.error = error
    elif new in (State.QUEUED, State.RUNNING, State.READY):
        session.error = None
    session.updatedAt = now_iso()
