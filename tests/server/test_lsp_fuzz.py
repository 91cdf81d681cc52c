"""Property-based tests over what a client may send: command arguments and code-action params.

One real ``handoff-lsp`` process serves the whole module (a module-scoped fixture with its own
event loop; the hypothesis tests are plain functions that run their requests on that loop). The
budget is a number of examples, not a time, and derandomized, so CI runs the same inputs every
time. Properties:

- every request is answered within a timeout: a result, or a JSON-RPC error that is not an
  internal error (an internal error is an exception nobody expected: a bug);
- right after each example a ``handoff.listSessions`` still answers correctly;
- a code action whose positions are all valid LSP integers gets a result, not an error;
- at the end the process is alive, its stdout carried nothing but JSON-RPC, and once the
  sessions the fuzzing started are discarded, nothing of them is left in git.

Fuzzed delegations start sessions: the repository's agent is a fast command agent (the built-in
one fails at once, for want of a model). Each session command's test first starts a few
sessions for it to meet, and each test discards what is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from handoff.agent import trust
from handoff.agent.client import stop_daemon
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pygls.exceptions import JsonRpcException

from tests.support.git import GIT_ENV, git, git_leftovers
from tests.support.lsp_agents import Agent
from tests.support.lsp_client import Editor
from tests.support.lsp_raw import INTERNAL_ERROR, request, server_pid

PER_REQUEST_S = 20.0
INVALID_PARAMS = -32602
UINT_MAX = 2**31 - 1
KNOWN = "@known-session:"  # + n: replaced by the id of the n-th session known when the example runs
APP = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
TODOS = "# TODO: first thing\nx = 1\n# FIXME(agent): second thing\ny = 2\n"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Fuzz:
    """The long-lived server and what the examples need of it."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, editor: Editor, repo: Path, outside: Path
    ) -> None:
        self.loop, self.editor, self.repo = loop, editor, repo
        self.app = (repo / "app.py").as_uri()
        self.todos = (repo / "todos.py").as_uri()
        self.uris = [
            self.app,
            self.todos,
            (repo / "closed.py").as_uri(),
            (repo / "gone.py").as_uri(),
            repo.as_uri(),
            outside.as_uri(),
            "untitled:Untitled-1",
            "",
            "file:///",
        ]
        self.sessions: list[dict[str, Any]] = []
        self.requests = 0  # requests sent through :meth:`request`, each answered on stdout

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def known(self, n: int) -> str:
        return self.sessions[n % len(self.sessions)]["id"] if self.sessions else "no-session-yet"

    async def request(self, method: str, params: Any, timeout: float = PER_REQUEST_S) -> Any:
        self.requests += 1
        return await request(self.editor, method, params, timeout)

    async def answer(self, method: str, params: Any) -> tuple[str, Any]:
        """("result", value) or ("error", JsonRpcException); then the sanity request."""
        try:
            outcome: tuple[str, Any] = ("result", await self.request(method, params))
        except JsonRpcException as exc:
            assert exc.code != INTERNAL_ERROR, (
                f"internal error for {method} {str(params)[:500]}:\n{exc}"
            )
            outcome = ("error", exc)
        listed = await self.request(
            "workspace/executeCommand", {"command": "handoff.listSessions", "arguments": [{}]}
        )
        assert isinstance(listed["sessions"], list), listed
        self.sessions = listed["sessions"]
        assert self.editor.client._server.returncode is None, "the server died"
        return outcome

    def seed(self) -> None:
        """Sessions for the session commands to meet: two that get ready, one that fails."""

        async def go() -> None:
            for agent in ("edit", "edit", "bad"):
                arg = {"uri": self.app, "instruction": f"seeded for {agent}", "agent": agent}
                await self.request(
                    "workspace/executeCommand", {"command": "handoff.delegate", "arguments": [arg]}
                )

        self.run(go())

    def discard_all(self) -> None:
        async def go() -> None:
            for s in (
                await self.request(
                    "workspace/executeCommand",
                    {"command": "handoff.listSessions", "arguments": [{}]},
                )
            )["sessions"]:
                if s["state"] in ("queued", "running"):
                    # cancelled and stopped first: on a loaded machine an agent may take longer
                    # to stop than a discard waits for it
                    try:
                        await self.request(
                            "workspace/executeCommand",
                            {"command": "handoff.cancel", "arguments": [{"sessionId": s["id"]}]},
                            60,
                        )
                    except JsonRpcException as exc:  # it ended meanwhile
                        assert "nothing to cancel" in str(exc), exc
                    await self.editor.wait_state(
                        s["id"], "ready", "failed", "cancelled", "interrupted", timeout=60
                    )
                if s["state"] not in ("applied", "discarded"):
                    await self.request(
                        "workspace/executeCommand",
                        {"command": "handoff.discard", "arguments": [{"sessionId": s["id"]}]},
                        60,
                    )

        self.run(go())


def _substitute(value: Any, fz: Fuzz) -> Any:
    if isinstance(value, str) and value.startswith(KNOWN):
        return fz.known(int(value[len(KNOWN) :]))
    if isinstance(value, list):
        return [_substitute(v, fz) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, fz) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    repo = base / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "app.py").write_text(APP)
    (repo / "todos.py").write_text(TODOS)
    (repo / "closed.py").write_text("# a file the editor never opens\nz = 3\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    # `bad` fails at once (the built-in agent, with no model, would be refused before it starts)
    Agent(repo, base / "agent").configure(
        extra_toml='maxParallel = 2\n[agents.bad]\ncommand = ["false"]'
    )
    trust.trust(repo, root=base / "state")  # the editor's own state folder (below)
    outside = base / "outside.py"
    outside.write_text("# TODO: outside\n")
    (base / "home").mkdir()
    env = {
        "HANDOFF_STATE_DIR": str(base / "state"),
        "HOME": str(base / "home"),
        **GIT_ENV,
        "HANDOFF_MODEL": "",
        "HANDOFF_API_BASE": "",
        "HANDOFF_API_KEY": "",
    }
    loop = asyncio.new_event_loop()
    editor = loop.run_until_complete(Editor.start("neovim", repo, env=env))
    fz = Fuzz(loop, editor, repo, outside)
    editor.open(repo / "app.py")
    editor.open(repo / "todos.py")
    try:
        yield fz
    finally:
        try:
            if editor.client._server.returncode is None:
                fz.discard_all()
                loop.run_until_complete(editor.stop())
            else:
                loop.run_until_complete(editor.client.stop())
        finally:
            loop.close()
            stop_daemon(base / "state")  # the daemon its server started ends with the module


# -- strategies ----------------------------------------------------------------------------
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
known = st.integers(0, 40).map(lambda n: f"{KNOWN}{n}")
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
ints = st.one_of(
    st.integers(0, 12),
    st.integers(-(2**40), 2**40),
    st.sampled_from([UINT_MAX, UINT_MAX + 1, -1, 2**53, 2**64]),
)
position = st.fixed_dictionaries({"line": ints, "character": ints})
ranges = st.fixed_dictionaries({"start": position, "end": position})
diagnostic = st.fixed_dictionaries(
    {"range": ranges, "message": st.text(max_size=20)},
    optional={
        "source": st.sampled_from(["handoff", "pyright", ""]) | st.text(max_size=5),
        "severity": st.sampled_from([1, 2, 3, 4]),
        "code": st.integers(-(2**31), UINT_MAX) | st.text(max_size=5),
        "data": json_values
        | st.fixed_dictionaries(
            {"sessionId": known | st.text(max_size=5) | json_values},
            optional={"conflict": json_values, "state": json_values},
        ),
    },
)


def uris(fz: Fuzz) -> st.SearchStrategy[Any]:
    return st.sampled_from(fz.uris) | st.text(max_size=20) | json_values


def argument_fields(fz: Fuzz, name: str) -> dict[str, st.SearchStrategy[Any]]:
    session = known | st.text(max_size=12) | json_values
    instruction = st.text(max_size=40) | json_values
    return {
        "handoff.delegate": {
            "uri": uris(fz),
            "range": ranges | json_values,
            "instruction": instruction,
            "agent": st.sampled_from(["edit", "builtin", "ghost", ""]) | json_values,
            "diagnostics": st.lists(diagnostic | json_values, max_size=3) | json_values,
        },
        "handoff.delegateTodos": {"uri": uris(fz)},
        "handoff.listSessions": {},
        "handoff.apply": {"sessionId": session, "conflictMarkers": st.booleans() | json_values},
        "handoff.followUp": {"sessionId": session, "instruction": instruction},
    }.get(name, {"sessionId": session})


def plausible(fz: Fuzz, name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments a real client could send: they start sessions and act on them, so the odd
    ones meet sessions in every state."""
    good_uri = st.sampled_from(fz.uris[:3])
    if name == "handoff.delegate":
        small = st.fixed_dictionaries({"line": st.integers(0, 9), "character": st.integers(0, 40)})
        words = st.text(
            st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=30
        )
        return st.fixed_dictionaries(
            {"uri": good_uri, "instruction": words | st.text(max_size=30)},
            optional={
                "range": st.fixed_dictionaries({"start": small, "end": small}),
                "agent": st.sampled_from(["edit", "builtin", None]),
                "diagnostics": st.lists(diagnostic, max_size=2),
            },
        )
    if name == "handoff.delegateTodos":
        return st.fixed_dictionaries({"uri": good_uri})
    if name == "handoff.listSessions":
        return st.just({})
    extra = {
        "handoff.apply": {"conflictMarkers": st.booleans()},
        "handoff.followUp": {"instruction": st.text(max_size=20)},
    }.get(name, {})
    return st.fixed_dictionaries({"sessionId": known}, optional=extra)


def arguments(fz: Fuzz, name: str) -> st.SearchStrategy[Any]:
    """One object: plausible, or with the command's keys each maybe present and maybe odd;
    sometimes anything at all."""
    odd = st.builds(
        lambda extra, fields: {**extra, **fields},
        st.dictionaries(st.text(max_size=8), json_values, max_size=2),
        st.fixed_dictionaries({}, optional=argument_fields(fz, name)),
    )
    return st.one_of(
        plausible(fz, name).map(lambda o: [o]),
        odd.map(lambda o: [o]),
        st.lists(json_values, max_size=3),
        json_values,
    )


def code_action_params(fz: Fuzz) -> st.SearchStrategy[dict[str, Any]]:
    context = st.fixed_dictionaries(
        {"diagnostics": st.lists(diagnostic, max_size=4)},
        optional={
            "only": st.lists(
                st.sampled_from(
                    [
                        "quickfix",
                        "refactor",
                        "refactor.rewrite",
                        "",
                        "quickfix.handoff",
                        "source",
                        "x.y",
                    ]
                ),
                max_size=3,
            ),
            "triggerKind": st.sampled_from([1, 2]),
        },
    )
    document = st.fixed_dictionaries({"uri": st.sampled_from(fz.uris) | st.text(max_size=20)})
    return st.fixed_dictionaries({"textDocument": document, "range": ranges, "context": context})


def positions_valid(params: dict[str, Any]) -> bool:
    rs = [params["range"]] + [d["range"] for d in params["context"]["diagnostics"]]
    return all(
        0 <= p[k] <= UINT_MAX
        for r in rs
        for p in (r["start"], r["end"])
        for k in ("line", "character")
    )


# -- the properties ----------------------------------------------------------------------------
COMMANDS = [
    "handoff.delegate",
    "handoff.delegateTodos",
    "handoff.listSessions",
    "handoff.apply",
    "handoff.followUp",
    "handoff.cancel",
    "handoff.discard",
    "handoff.show",
    "handoff.preview",
]


@pytest.mark.parametrize("name", COMMANDS)
def test_any_command_arguments_get_an_answer(fuzz: Fuzz, name: str):
    @FUZZ
    @given(args=arguments(fuzz, name))
    def example(args: Any) -> None:
        args = _substitute(args, fuzz)
        kind, value = fuzz.run(
            fuzz.answer("workspace/executeCommand", {"command": name, "arguments": args})
        )
        if kind == "error":
            assert value.code in (INVALID_PARAMS, -32803), (
                value
            )  # bad arguments / could not be done
            assert len(str(value)) <= 2100
        elif name == "handoff.delegate":
            assert isinstance(value["sessionId"], str)

    if name not in ("handoff.delegate", "handoff.delegateTodos"):
        fuzz.seed()
    example()
    fuzz.discard_all()


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_any_code_action_params_get_an_answer(fuzz: Fuzz, data: st.DataObject):
    params = _substitute(data.draw(code_action_params(fuzz)), fuzz)
    kind, value = fuzz.run(fuzz.answer("textDocument/codeAction", params))
    if positions_valid(params):
        assert kind == "result", value
        for action in value or []:
            assert action["title"] and action["command"]["command"].startswith("handoff."), action
            assert isinstance(action["command"]["arguments"][0], dict)
    else:
        assert kind == "error" and value.code == INVALID_PARAMS, value
        assert "invalid params" in str(value)


def test_the_server_survived(fuzz: Fuzz):
    editor = fuzz.editor
    assert editor.client._server.returncode is None
    assert editor.client.error is None
    pid = server_pid(editor)
    assert Path(f"/proc/{pid}").exists()
    fuzz.discard_all()
    assert (
        fuzz.run(
            fuzz.answer(
                "workspace/executeCommand", {"command": "handoff.listSessions", "arguments": [{}]}
            )
        )[0]
        == "result"
    )
    assert git_leftovers(fuzz.repo) == ([], [], [])  # the warm pool's idle worktrees aside
    # stdout carried nothing but JSON-RPC, the answer to every request among it (run alone, this
    # test's own requests; after the fuzzing, its hundreds)
    assert editor.check_stdout() >= fuzz.requests >= 2
