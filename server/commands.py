"""The ``workspace/executeCommand`` commands of docs/DESIGN.md (one JSON object argument, camelCase).

A command that starts work returns at once with the session id: the session belongs to the
server, so a cancelled request cancels nothing. Errors are JSON-RPC errors whose message is
written for the developer.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import typing
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import cattrs
from handoff.agent import protocol
from handoff.agent.client import RemoteError
from handoff.agent.protocol import ACTIVE, SessionError, State, TransitionError, allows
from handoff.text import clip
from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.exceptions import JsonRpcException
from pygls.protocol import default_converter

from . import delegation, hunks, show, todos
from .apply import apply_session
from .protocol import RawJSON, problems, session_list
from .repos import NotInRepository

if TYPE_CHECKING:
    from .server import HandoffServer

Handler = Callable[..., Any]  # fn(ls, *args): the answer, or an awaitable of it

log = logging.getLogger(__name__)
MAX_MESSAGE = 2000  # an error message never echoes a megabyte of what it was sent

DELEGATE = "handoff.delegate"
DELEGATE_TODOS = "handoff.delegateTodos"
LIST = "handoff.listSessions"
APPLY = "handoff.apply"
FOLLOW_UP = "handoff.followUp"
CANCEL = "handoff.cancel"
DISCARD = "handoff.discard"
SHOW = "handoff.show"
PREVIEW = "handoff.preview"
TRUST = "handoff.trust"
AGENTS = "handoff.agents"  # {uri?}: the agents one can delegate to, and whether each is installed
ANSWER = "handoff.answer"  # {sessionId, optionId}: the answer to an agent's permission question
REJECT = "handoff.reject"
REVEAL = "handoff.reveal"  # put the cursor somewhere (the TODO line a code action inserted)
CLIENT_DELEGATE_PROMPT = "handoff.client.delegatePrompt"  # run by the client: ask, then delegate


@functools.cache
def converter():
    """pygls' converter (camelCase wire names), built once (it takes a while); the server's own."""
    return default_converter()


class RequestFailed(JsonRpcException):
    CODE = -32803  # LSP's RequestFailed: the request was valid, the work could not be done


class CommandError(Exception):
    """Bad arguments; the message says which."""


# What a request can run into that is the developer's situation, not a bug: a message, no traceback.

EXPECTED = (
    CommandError,
    SessionError,
    TransitionError,
    NotInRepository,
    delegation.NoTask,
    RemoteError,
)  # RemoteError: what the session daemon refused, or that it is unreachable


@attrs.define
class DelegateArgs:
    uri: str
    range: types.Range | None = None
    instruction: str | None = None
    agent: str | None = None
    diagnostics: list[Any] | None = None


@attrs.define
class UriArgs:
    uri: str


@attrs.define
class AnswerArgs:
    session_id: str
    option_id: str


@attrs.define
class TrustArgs:
    uri: str | None = None


@attrs.define
class SessionArgs:
    session_id: str


@attrs.define
class ApplyArgs:
    session_id: str
    conflict_markers: bool = False
    hunks: list[str] | None = None


@attrs.define
class RejectArgs:
    session_id: str
    hunks: list[str] | None = None  # required: hunks.reject says so when missing
    reason: str | None = None


@attrs.define
class RevealArgs:
    uri: str
    range: types.Range


@attrs.define
class FollowUpArgs:
    session_id: str
    instruction: str | None = None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def _json(value: Any) -> str:
    return json.dumps(value, default=repr, ensure_ascii=False)


_JSON_TYPES = {str: "a string", bool: "true or false", list: "an array", int: "an integer"}


def _wrong_types(cls, arg: dict[str, Any]) -> list[str]:
    """Plain-typed fields (str, bool, list) given a value of another JSON type. cattrs would
    turn ``5`` into ``"5"`` and ``"no"`` into ``True``; a command takes what it was sent."""
    hints = typing.get_type_hints(cls)
    wrong = []
    for f in attrs.fields(cls):
        name = _camel(f.name)
        if name not in arg:
            continue
        options = typing.get_args(hints[f.name]) or (hints[f.name],)
        value = arg[name]
        if value is None and type(None) in options:
            continue
        plain = [typing.get_origin(o) or o for o in options if o is not type(None)]
        if not all(p in _JSON_TYPES for p in plain):
            continue  # a structured type (Range...): cattrs checks it
        if not any(
            isinstance(value, p) and not (p is int and isinstance(value, bool)) for p in plain
        ):
            wanted = " or ".join(_JSON_TYPES[p] for p in plain)
            null = " (or null)" if type(None) in options else ""
            wrong.append(f"`{name}` must be {wanted}{null}")
    return wrong


def parse(cls, args: tuple[Any, ...], command: str):
    """The command's one object argument as ``cls``, or a readable error (wire names)."""
    arg = args[0] if args else {}
    if not isinstance(arg, dict) or len(args) > 1:
        raise CommandError(
            f"{command} takes one JSON object argument, got {clip(_json(list(args)))}"
        )
    missing = [
        _camel(f.name)
        for f in attrs.fields(cls)
        if f.default is attrs.NOTHING and _camel(f.name) not in arg
    ]
    if missing:
        names = ", ".join(f"`{m}`" for m in missing)
        raise CommandError(
            f"{command}: bad arguments: {names} missing (got {clip(_json(sorted(arg)))})"
        )
    wrong = _wrong_types(cls, arg)
    if wrong:
        raise CommandError(f"{command}: bad arguments: {'; '.join(wrong)}")
    try:
        return converter().structure(arg, cls)
    except cattrs.BaseValidationError as exc:
        raise CommandError(f"{command}: bad arguments: {problems(exc, 'arguments')}") from None


def _range_dict(rng: types.Range | None) -> dict[str, Any] | None:
    return converter().unstructure(rng) if rng is not None else None


class Command:
    """One command's handler as pygls calls it: the arguments parsed by ``fn``, the expected
    errors (:data:`EXPECTED`) as ``RequestFailed`` with their message, and the session list
    sent at once after a command that changed something. A plain ``fn`` answers in the same
    turn of the event loop (nothing else queues before it), or returns an awaitable when it has
    to wait after all; an ``async def`` runs as a task."""

    def __init__(self, name: str, fn: Handler, *, reads_only: bool = False) -> None:
        self.name, self.fn, self.reads_only = name, fn, reads_only

        self.__name__ = fn.__name__

    def __call__(self, ls: HandoffServer, *args: Any) -> Any:
        try:
            result = self.fn(ls, *args)
        except EXPECTED as exc:
            raise self.failed(exc) from None
        return self.finish(ls, result) if inspect.isawaitable(result) else self.done(ls, result)

    def failed(self, exc: Exception) -> RequestFailed:
        message = clip(str(exc), MAX_MESSAGE)
        log.info("%s: %s", self.name, message)
        return RequestFailed(message=message)

    def done(self, ls: HandoffServer, result: Any) -> Any:
        if not self.reads_only:  # the session list already shows what the command did
            ls.status.flush_now()
        return result

    async def finish(self, ls: HandoffServer, pending: Awaitable[Any]) -> Any:
        try:
            return self.done(ls, await pending)
        except EXPECTED as exc:
            raise self.failed(exc) from None


def register(ls: HandoffServer) -> None:
    """Register every command of :data:`COMMANDS` with the server."""
    for name, fn, reads_only in COMMANDS:
        ls.command(name)(Command(name, fn, reads_only=reads_only))


async def delegate(ls: HandoffServer, *args: Any) -> dict[str, Any]:
    a = parse(DelegateArgs, args, DELEGATE)
    s = await delegation.delegate(
        ls,
        a.uri,
        _range_dict(a.range),
        instruction=a.instruction,
        agent=a.agent,
        diagnostics=a.diagnostics,
    )
    return {"sessionId": s.id}


async def delegate_todos(ls: HandoffServer, *args: Any) -> dict[str, Any]:
    a = parse(UriArgs, args, DELEGATE_TODOS)
    repo, file = await ls.repos.for_uri(a.uri)
    text = await delegation.current_text(ls, repo, a.uri, file)
    found = todos.find_todos(text)
    if not found:
        raise CommandError(f"there is no TODO, FIXME or XXX comment in {file}")
    ids = []
    for t in found:
        s = await delegation.delegate(
            ls,
            a.uri,
            delegation.todo_range(text, t, ls.encoding),
            instruction=delegation.todo_instruction(t, file),
            title=t.text,
        )
        ids.append(s.id)
    return {"sessionIds": ids}


def _sessions(ls: HandoffServer) -> RawJSON:
    return session_list(ls.repos.sessions())


async def _sessions_after_discovery(ls: HandoffServer) -> RawJSON:
    await ls.until_discovered()
    return _sessions(ls)


def list_sessions(ls: HandoffServer, *args: Any) -> RawJSON | Awaitable[RawJSON]:
    # Asked often (status bars refresh with it): answered at once, unless the workspace's
    # repositories are still being found.
    return _sessions(ls) if ls.repos.discovered.is_set() else _sessions_after_discovery(ls)


async def apply(ls: HandoffServer, *args: Any) -> dict[str, Any]:
    a = parse(ApplyArgs, args, APPLY)
    return await apply_session(ls, a.session_id, conflict_markers=a.conflict_markers, hunks=a.hunks)


async def reject(ls: HandoffServer, *args: Any) -> dict[str, Any]:
    a = parse(RejectArgs, args, REJECT)
    return await hunks.reject(ls, a.session_id, a.hunks or [], a.reason)


async def reveal(ls: HandoffServer, *args: Any) -> dict[str, Any]:
    a = parse(RevealArgs, args, REVEAL)
    if get_capability(ls.client_capabilities, "window.show_document.support", False):
        await ls.window_show_document_async(
            types.ShowDocumentParams(uri=a.uri, take_focus=True, selection=a.range)
        )
    return {}


async def follow_up(ls: HandoffServer, *args: Any) -> dict[str, Any]:
    a = parse(FollowUpArgs, args, FOLLOW_UP)
    repo, s = ls.repos.find(a.session_id)
    if not allows(s, "followUp"):
        hint = (
            "it is still running: wait for it, or cancel it"
            if s.state in ACTIVE
            else "start a new session"
        )
        raise SessionError(f"session {s.id} is {s.state.value}: it cannot be followed up ({hint})")
    instruction = (a.instruction or "").strip()
    if not instruction and s.uri:
        # From a code action: the comment at the origin, as it is now, is the instruction.
        text = await delegation.current_text(ls, repo, s.uri, s.file or "")
        try:
            instruction, _ = delegation.task_of(text, s.range, s.file or s.uri)
        except delegation.NoTask:
            pass
    if not instruction and allows(s, "resume"):
        instruction = s.instruction  # resume: the last instruction, once more
    if not instruction:
        raise CommandError(
            f"{FOLLOW_UP} needs an `instruction` (or a comment at the session's origin that says "
            "what to do next)"
        )
    result = await ls.repos.call(
        protocol.FOLLOW_UP,
        {
            "sessionId": s.id,
            "instruction": instruction,
            **ls.settings.request_params(repo.root),
        },
    )
    return {"sessionId": ls.repos.adopt(result["session"]).id}


async def cancel(ls: HandoffServer, *args: Any) -> dict[str, Any]:
    a = parse(SessionArgs, args, CANCEL)
    await cancel_session(ls, a.session_id)
    return {}


async def discard(ls: HandoffServer, *args: Any) -> dict[str, Any]:
    a = parse(SessionArgs, args, DISCARD)
    repo, s = ls.repos.find(a.session_id)
    await ls.repos.call(protocol.DISCARD, {"sessionId": s.id})  # cancels it first if it runs
    return {}


async def show_session(ls: HandoffServer, *args: Any) -> dict[str, Any]:
    a = parse(SessionArgs, args, SHOW)
    repo, s = ls.repos.find(a.session_id)
    await show.show(ls, repo, s)
    return {}


async def preview(ls: HandoffServer, *args: Any) -> dict[str, Any]:
    a = parse(SessionArgs, args, PREVIEW)
    repo, s = ls.repos.find(a.session_id)
    if s.state is not State.READY:
        raise SessionError(
            f"session {s.id} is {s.state.value}: only a ready session has a result to preview"
        )
    return {"files": await show.preview(ls, repo, s)}


async def agents(ls: HandoffServer, *args: Any) -> dict[str, Any]:
    a = parse(TrustArgs, args, AGENTS)
    root = None
    if a.uri:
        root = (await ls.repos.for_uri(a.uri))[0].root
    elif len(ls.repos.roots()) == 1:
        root = ls.repos.roots()[0]
    result = await ls.repos.call(
        protocol.AGENTS,
        {"root": str(root) if root else None, **ls.settings.request_params(root)},
    )
    return {"agents": result["agents"]}


async def answer(ls: HandoffServer, *args: Any) -> dict[str, Any]:
    a = parse(AnswerArgs, args, ANSWER)
    ls.repos.find(a.session_id)
    result = await ls.repos.call(
        protocol.ANSWER, {"sessionId": a.session_id, "optionId": a.option_id}
    )
    ls.repos.adopt(result["session"])
    return {}


async def trust(ls: HandoffServer, *args: Any) -> dict[str, Any]:
    a = parse(TrustArgs, args, TRUST)
    if a.uri:
        repo, _ = await ls.repos.for_uri(a.uri)
        root = repo.root
    else:
        await ls.until_discovered()
        roots = ls.repos.roots()
        if len(roots) != 1:
            raise CommandError(
                f"{TRUST} needs a `uri` of a file in the repository to trust "
                f"({len(roots)} repositories are open)"
            )
        root = roots[0]
    from .settings import trust as trust_root

    result = await trust_root(ls, root)
    return {"file": result["file"], "guarded": result.get("guarded") or []}


# (command, handler, reads only: changes nothing, so no session list is sent after it)
COMMANDS: tuple[tuple[str, Handler, bool], ...] = (
    (DELEGATE, delegate, False),
    (DELEGATE_TODOS, delegate_todos, False),
    (LIST, list_sessions, True),
    (APPLY, apply, False),
    (REJECT, reject, False),
    (REVEAL, reveal, True),
    (FOLLOW_UP, follow_up, False),
    (CANCEL, cancel, False),
    (DISCARD, discard, False),
    (SHOW, show_session, True),
    (PREVIEW, preview, True),
    (AGENTS, agents, True),
    (ANSWER, answer, False),
    (TRUST, trust, False),
)


async def cancel_session(ls: HandoffServer, session_id: str) -> None:
    """Cancel and wait (a little) until the agent has stopped."""
    repo, s = ls.repos.find(session_id)
    if s.state not in ACTIVE:
        raise SessionError(f"session {s.id} is {s.state.value}, not running: nothing to cancel")
    result = await ls.repos.call(protocol.CANCEL, {"sessionId": s.id, "wait": True})
    ls.repos.adopt(result["session"])
