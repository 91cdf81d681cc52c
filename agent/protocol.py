"""The session daemon's protocol: the one module both sides import (docs/DESIGN.md, "The session
daemon").

JSON-RPC 2.0 over a Unix socket, one message a line (UTF-8 JSON, no embedded newlines). The
client speaks first with ``initialize``; after that either side may send requests and
notifications. Bytes (file contents) travel as base64 strings. No pickles: every message is
plain JSON, its shape typed here.

Requests (client -> daemon), params -> result:

- ``initialize`` :class:`InitializeParams` -> :class:`InitializeResult`
- ``status`` {} -> :class:`StatusResult`
- ``shutdown`` {} -> {} (running sessions become ``interrupted``; the daemon exits)
- ``openRepo`` {path} -> {root, sessions: [Session]}: the repository of ``path``, loaded; this
  connection gets its events from now on
- ``config`` {root, env, overrides} -> {config, messages}: the effective configuration
- ``delegate`` :class:`DelegateParams` -> {session, messages}
- ``followUp`` {sessionId, instruction?, env, overrides} -> {session} (no instruction: resume)
- ``cancel`` {sessionId, wait?} -> {session}
- ``discard`` {sessionId} -> {}
- ``get`` {sessionId} -> {session}
- ``plan`` :class:`PlanParams` -> {files: [PlannedFile], disk: {path: base64|null}, claim?}: the
  result merged three-way against ``current`` (the client's open buffers) and, for the rest, the
  disk (``disk``: what was read there). ``claim: true`` claims
  the apply for this connection (refused when another holds it or the session is not ready);
  ``recordConflicts`` keeps the conflict count in the record.
- ``finishApply`` {sessionId, claim, applied, conflicts?} -> {session}: the client wrote the
  result (``applied``: the session becomes applied and its worktree goes) or gave up
- ``applyToDisk`` {sessionId, conflictMarkers} -> {written, conflicts}: the terminal's apply
- ``diff`` {sessionId} -> {diff}; ``report`` {sessionId} -> {path}: the session's report written
- ``gc`` {root} -> {removed}
- ``answer`` {sessionId, optionId} -> {session}: the developer's answer to the agent's permission
  question (``Session.question``, ``permissions = "ask"``)
- ``agents`` {root?, env, overrides} -> {agents: [row]}: the built-in agent, the presets and the
  configured agents, whether each is installed and how to install it (``handoff agents``)
- ``trust`` {root} -> {file, guarded}: the repository's Handoff settings trusted as they are now
- ``rejectChanges`` {sessionId, reverts: [{path, oldPath?, merged?, kept?}], note?, finish?} ->
  {session}: take the changes the developer rejected out of the result (``merged`` -> ``kept``,
  base64, merged into the agent's file; neither: the whole file back to the snapshot); ``finish``:
  nothing is left to review, so the session ends (applied, or discarded when none of it is left)
- ``recordHunks`` {sessionId, hunks} -> {session}: how many changes are left to review

Notifications (daemon -> client): ``session`` {session} for every change of a session of a
repository the connection opened; ``progress`` {sessionId, message, steps, costUsd}.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, TypedDict

# The Session wire form and its states are part of the protocol.
from .session import (
    ACTIVE,
    FINAL,
    Session,
    SessionError,
    State,
    TransitionError,
    actions_of,
    allows,
)

__all__ = [
    "ACTIVE",
    "FINAL",
    "PROTOCOL_VERSION",
    "Planned",
    "RemoteError",
    "Session",
    "SessionError",
    "State",
    "TransitionError",
    "actions_of",
    "allows",
    "decode",
    "encode",
]

PROTOCOL_VERSION = 1
LINE_LIMIT = 1 << 30  # one message: a delegation carries the unsaved buffers

# Methods
INITIALIZE = "initialize"
STATUS = "status"
SHUTDOWN = "shutdown"
OPEN_REPO = "openRepo"
CONFIG = "config"
DELEGATE = "delegate"
FOLLOW_UP = "followUp"
CANCEL = "cancel"
DISCARD = "discard"
GET = "get"
PLAN = "plan"
FINISH_APPLY = "finishApply"
APPLY_TO_DISK = "applyToDisk"
DIFF = "diff"
REPORT = "report"
GC = "gc"
TRUST = "trust"
ANSWER = "answer"
AGENTS = "agents"
REJECT_CHANGES = "rejectChanges"
RECORD_HUNKS = "recordHunks"
# Notifications
SESSION = "session"
PROGRESS = "progress"

# Error codes (JSON-RPC's own, then ours)
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REQUEST_FAILED = -32803  # the request was fine; the work could not be done (the message says why)
NOT_A_REPOSITORY = -32001


class ClientInfo(TypedDict):
    name: str  # "handoff-lsp", "handoff"
    pid: int


class InitializeParams(TypedDict):
    protocolVersion: int
    client: ClientInfo


class InitializeResult(TypedDict):
    protocolVersion: int
    version: str  # the daemon's package version
    pid: int
    active: int  # sessions queued or running: a daemon with none may be replaced


class StatusResult(TypedDict):
    pid: int
    version: str
    protocolVersion: int
    socket: str
    stateDir: str
    sessions: dict[str, int]  # state -> how many
    clients: list[ClientInfo]
    repos: list[str]
    startedAt: float
    # {executor: "local" | "ray", cluster, nodes, cpus, remote: {sessionId: {node, ip, pid, ...}}}
    executor: dict[str, Any]
    pool: dict[str, dict[str, int]]  # repository -> {worktrees, bytes}: its idle pooled worktrees


class DelegateParams(TypedDict, total=False):
    root: str
    instruction: str
    file: str | None  # repository-relative posix path of the origin
    uri: str | None
    range: dict[str, Any] | None
    overlays: dict[str, str]  # path -> base64 content: the unsaved buffers
    agent: str | None
    diagnostics: list[str]
    title: str | None
    env: dict[str, str]  # the client's environment: configuration and the agents' variables
    overrides: list[list[Any]]  # [[source, settings object]...]: the editor's settings, later wins


class PlanParams(TypedDict, total=False):
    sessionId: str
    current: dict[str, str | None]  # path -> base64 content (None: does not exist) of open buffers
    claim: bool
    recordConflicts: bool


class ConflictWire(TypedDict):
    start: int
    end: int


class PlannedFile(TypedDict, total=False):
    path: str
    action: str  # write create delete rename unchanged conflict
    content: str | None  # base64
    conflicts: list[ConflictWire]
    oldPath: str | None
    reason: str
    mode: str | None  # git mode the file gets ("100755", "120000": a link to content); None: as is
    currentMode: str | None  # what was on disk when merged
    resolved: str | None  # base64: a text conflict merged with the developer's side kept


@dataclasses.dataclass(frozen=True)
class Region:
    start: int  # 0-based line of the file as it is now
    end: int  # exclusive


@dataclasses.dataclass
class Planned:
    """One file of a plan, as the client uses it (the :class:`PlannedFile` wire form decoded)."""

    path: str
    action: str
    content: bytes | None
    conflicts: list[Region]
    old_path: str | None = None
    reason: str = ""
    mode: str | None = None  # git mode the file gets (handoff/files.py); None leaves it as it is
    current_mode: str | None = None  # what was on disk when merged
    resolved: bytes | None = None  # a text conflict: the merge with the developer's side kept

    @property
    def link(self) -> bool:
        """Whether applying it makes or replaces a symbolic link (never a text edit)."""
        return "120000" in (self.mode, self.current_mode)

    @classmethod
    def from_wire(cls, d: PlannedFile) -> Planned:
        return cls(
            path=d["path"],
            action=d["action"],
            content=unb64(d.get("content")),
            conflicts=[Region(c["start"], c["end"]) for c in d.get("conflicts") or []],
            old_path=d.get("oldPath"),
            reason=d.get("reason") or "",
            mode=d.get("mode"),
            current_mode=d.get("currentMode"),
            resolved=unb64(d.get("resolved")),
        )


class RemoteError(Exception):
    """An error answer; ``str()`` is its message, written for the developer."""

    def __init__(self, message: str, code: int = REQUEST_FAILED, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def encode(message: dict[str, Any]) -> bytes:
    """One message as one line (json escapes every newline inside strings)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("a message must be a JSON object")
    return message


# -- where the daemon lives -------------------------------------------------------------------
SOCKET_LIMIT = 100  # bytes of a Unix socket path (108 with the NUL on Linux, 104 on macOS)


def daemon_dir(state_root: Path) -> Path:
    """The daemon's own files under the state folder: log, pid, lock."""
    return state_root / "daemon"


def _key(state_root: Path) -> str:
    return hashlib.sha1(str(state_root.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[
        :12
    ]


def socket_path(state_root: Path) -> Path:
    """The daemon's socket for ``state_root``: in ``$XDG_RUNTIME_DIR/handoff/`` when there is one,
    else under the state folder (or, when that path is too long for a socket, a private folder of
    this user in the temporary folder)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_absolute():
        path = Path(runtime) / "handoff" / f"d-{_key(state_root)}.sock"
        if len(os.fsencode(path)) <= SOCKET_LIMIT:
            return path
    path = daemon_dir(state_root) / "run" / "daemon.sock"
    if len(os.fsencode(path)) <= SOCKET_LIMIT:
        return path
    return Path(tempfile.gettempdir()) / f"handoff-{os.getuid()}" / f"d-{_key(state_root)}.sock"


def log_path(state_root: Path) -> Path:
    return daemon_dir(state_root) / "daemon.log"
