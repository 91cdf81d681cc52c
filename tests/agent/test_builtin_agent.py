"""The built-in agent, through litellm over real HTTP to a scripted model on 127.0.0.1.

litellm is never patched: the model string is ``openai/scripted-model`` and ``apiBase`` the
scripted server. Limits that need a price or a slow model use the ``Model`` seam instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from handoff.agent.backends import model as model_mod
from handoff.agent.backends.base import AgentContext, AgentError, LimitReached
from handoff.agent.backends.builtin import BuiltinBackend
from handoff.agent.backends.model import LiteLLMModel, ModelReply
from handoff.agent.config import Config
from handoff.offline_model import ScriptedModel, tool_call

from tests.support.paths import ROOT


@pytest.fixture(scope="module")
def litellm_ready() -> None:
    """Pay litellm's import (seconds) once for the module."""
    model_mod.import_litellm()


@pytest.fixture
def server(litellm_ready: None) -> Iterator[ScriptedModel]:
    with ScriptedModel() as s:
        yield s


class Events:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.progress: list[tuple[str, int, float]] = []


def make_ctx(
    repo: Path, events: Events, server: ScriptedModel | None = None, **cfg: Any
) -> AgentContext:
    config = Config(
        model="openai/scripted-model",
        apiBase=server.url if server else None,
        apiKey="sk-test",
        **cfg,
    )
    return AgentContext(
        session_id="s1",
        worktree=repo,
        instruction="make sub safer",
        brief="# Task\nmake sub safer\n",
        brief_path=repo.parent / "task.md",
        config=config,
        record=events.records.append,
        progress=lambda m, s, c: events.progress.append((m, s, c)),
    )


def tool_results(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


async def test_tool_calls_edit_the_worktree(repo: Path, server: ScriptedModel) -> None:
    events = Events()
    server.tool_call("write_file", {"path": "notes/new.txt", "content": "line 1\nline 2\n"})
    server.tool_calls(
        [
            ("read_file", {"path": "app.py"}),
            (
                "edit_file",
                {"path": "app.py", "oldText": "return a - b", "newText": "return int(a) - int(b)"},
            ),
        ]
    )
    server.tool_call("finish", {"summary": "made sub safer"})
    outcome = await BuiltinBackend().run(make_ctx(repo, events, server))

    assert outcome.summary == "made sub safer"
    assert outcome.steps == 3 and outcome.cost_usd == 0.0
    assert (repo / "notes/new.txt").read_text() == "line 1\nline 2\n"
    assert (repo / "app.py").read_text() == (
        "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return int(a) - int(b)\n"
    )
    assert len(server.requests) == 3
    first = server.requests[0]
    assert first["model"] == "scripted-model"
    assert [t["function"]["name"] for t in first["tools"]][-1] == "finish"
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert first["messages"][1]["content"] == "# Task\nmake sub safer\n"
    assert tool_results(server.requests[1])[0].startswith("created notes/new.txt")
    assert "def add(a, b):" in tool_results(server.requests[2])[1]
    assert outcome.messages[0] == {"role": "user", "content": "# Task\nmake sub safer\n"}
    assert all(m["role"] != "system" for m in outcome.messages)
    assert events.progress[-1] == ("finish", 3, 0.0)
    assert "sk-test" not in json.dumps(events.records)
    assert len(events.records) == len(outcome.messages)


async def test_follow_up_continues_the_conversation(repo: Path, server: ScriptedModel) -> None:
    server.tool_call("finish", {"summary": "first"}).tool_call("finish", {"summary": "second"})
    first = await BuiltinBackend().run(make_ctx(repo, Events(), server))
    ctx = make_ctx(repo, Events(), server)
    ctx.history, ctx.brief = first.messages, "also add tests"
    second = await BuiltinBackend().run(ctx)
    sent = server.requests[1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "user"]
    assert sent[-1]["content"] == "also add tests"
    assert second.summary == "second" and second.messages[:3] == first.messages


async def test_step_limit(repo: Path, server: ScriptedModel) -> None:
    for i in range(5):
        server.tool_call("write_file", {"path": f"f{i}.txt", "content": "x"})
    with pytest.raises(LimitReached, match=r"step limit reached \(maxSteps = 2\)") as info:
        await BuiltinBackend().run(make_ctx(repo, Events(), server, maxSteps=2))
    assert info.value.steps == 2 and len(server.requests) == 2
    assert (repo / "f1.txt").exists() and not (repo / "f2.txt").exists()


async def test_server_error_is_retried(
    repo: Path, server: ScriptedModel, capfd: pytest.CaptureFixture[str]
) -> None:
    server.status(500).tool_call("finish", {"summary": "ok after retry"})
    outcome = await BuiltinBackend().run(make_ctx(repo, Events(), server))
    assert outcome.summary == "ok after retry"
    assert len(server.requests) == 2
    assert capfd.readouterr().out == ""  # stdout belongs to JSON-RPC: litellm printed nothing


async def test_persistent_server_errors_give_up(repo: Path, server: ScriptedModel) -> None:
    for _ in range(3):
        server.status(503, headers={"Retry-After": "0"})
    model = LiteLLMModel("openai/scripted-model", server.url, "sk-test", retries=2)
    with pytest.raises(AgentError, match="unavailable after 3 attempts") as info:
        await BuiltinBackend(model).run(make_ctx(repo, Events(), server))
    assert len(server.requests) == 3 and "sk-test" not in str(info.value)


async def test_authentication_error_fails_at_once(
    repo: Path, server: ScriptedModel, capfd: pytest.CaptureFixture[str]
) -> None:
    server.status(
        401,
        {
            "error": {
                "message": "Incorrect API key provided: sk-test",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        },
    )
    with pytest.raises(AgentError) as info:
        await BuiltinBackend().run(make_ctx(repo, Events(), server))
    assert "authentication" in str(info.value) and "HANDOFF_API_KEY" in str(info.value)
    assert "sk-test" not in str(info.value)
    assert len(server.requests) == 1
    assert capfd.readouterr().out == ""


async def test_local_model_recipe_needs_no_key(
    repo: Path, server: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's local-model recipe: ``HANDOFF_MODEL=openai/<name>`` + ``HANDOFF_API_BASE``,
    and no key anywhere (no HANDOFF_API_KEY, no OPENAI_API_KEY): the request reaches the server."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.tool_call("write_file", {"path": "local.txt", "content": "from a local model\n"})
    server.tool_call("finish", {"summary": "done locally"})
    ctx = make_ctx(repo, Events(), server)
    ctx.config = Config(model="openai/local-model", apiBase=server.url)
    outcome = await BuiltinBackend().run(ctx)
    assert outcome.summary == "done locally"
    assert (repo / "local.txt").read_text() == "from a local model\n"
    assert len(server.requests) == 2 and server.requests[0]["model"] == "local-model"


async def test_keyless_server_that_wants_a_key_fails_at_once(
    repo: Path, server: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.status(
        401, {"error": {"message": "this server wants a key", "type": "invalid_request_error"}}
    )
    model = LiteLLMModel("openai/local-model", server.url, None)
    with pytest.raises(AgentError) as info:
        await BuiltinBackend(model).run(make_ctx(repo, Events(), server))
    assert "authentication" in str(info.value) and "HANDOFF_API_KEY" in str(info.value)
    assert "OPENAI_API_KEY" not in str(info.value)
    assert len(server.requests) == 1  # not retried as if it were temporary


async def test_missing_key_is_not_retried(
    repo: Path, server: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider whose SDK refuses to start without a key (litellm reports it as an
    InternalServerError): one clear message naming HANDOFF_API_KEY, no retries."""
    for name in ("AZURE_API_KEY", "AZURE_OPENAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    waits: list[int] = []
    monkeypatch.setattr(model_mod, "_delay", lambda attempt, exc: waits.append(attempt) or 0.0)
    model = LiteLLMModel("azure/some-deployment", server.url, None)
    with pytest.raises(AgentError) as info:
        await BuiltinBackend(model).run(make_ctx(repo, Events(), server))
    assert str(info.value) == (
        "the model 'azure/some-deployment' needs an API key: set HANDOFF_API_KEY (or apiKey)"
    )
    assert waits == [] and server.requests == []


async def test_unknown_model_fails_at_once(repo: Path, server: ScriptedModel) -> None:
    server.status(
        404,
        {
            "error": {
                "message": "The model `x` does not exist",
                "type": "invalid_request_error",
                "code": "model_not_found",
            }
        },
    )
    with pytest.raises(AgentError, match="model not found"):
        await BuiltinBackend().run(make_ctx(repo, Events(), server))
    assert len(server.requests) == 1


async def test_escapes_are_refused(repo: Path, server: ScriptedModel) -> None:
    target = Path("/tmp") / f"handoff-escape-{os.getpid()}.txt"
    server.tool_calls(
        [
            ("write_file", {"path": "../outside.txt", "content": "x"}),
            ("write_file", {"path": str(target), "content": "x"}),
            ("edit_file", {"path": ".git/HEAD", "oldText": "ref", "newText": "x"}),
        ]
    )
    server.tool_call("finish", {"summary": "tried"})
    outcome = await BuiltinBackend().run(make_ctx(repo, Events(), server))
    assert outcome.summary == "tried"
    results = tool_results(server.requests[1])
    assert len(results) == 3 and all(r.startswith("error:") for r in results)
    assert not (repo.parent / "outside.txt").exists() and not target.exists()


async def test_garbage_arguments_then_recovery(repo: Path, server: ScriptedModel) -> None:
    server.tool_call("write_file", '{"path": "a.txt", "content": ')  # truncated JSON
    server.tool_call("write_file", {"path": "a.txt", "content": "fixed\n"})
    server.tool_call("finish", {"summary": "recovered"})
    outcome = await BuiltinBackend().run(make_ctx(repo, Events(), server))
    assert outcome.summary == "recovered"
    assert "not a JSON object (invalid JSON" in tool_results(server.requests[1])[0]
    assert (repo / "a.txt").read_text() == "fixed\n"


async def test_three_garbage_replies_give_up(repo: Path, server: ScriptedModel) -> None:
    server.tool_call("write_file", "{{{").tool_call("no_such_tool", {}).text("")
    with pytest.raises(AgentError, match="unusable output"):
        await BuiltinBackend().run(make_ctx(repo, Events(), server))
    assert len(server.requests) == 3


async def test_text_reply_is_nudged_then_taken_as_summary(
    repo: Path, server: ScriptedModel
) -> None:
    server.text("I think it is done.").text("All done: nothing to change.")
    outcome = await BuiltinBackend().run(make_ctx(repo, Events(), server))
    assert outcome.summary == "All done: nothing to change."
    assert "call" in server.requests[1]["messages"][-1]["content"]  # the nudge


async def test_no_model_configured(repo: Path) -> None:
    ctx = make_ctx(repo, Events())
    ctx.config.model = None
    with pytest.raises(AgentError, match="no model configured: set HANDOFF_MODEL"):
        await BuiltinBackend().run(ctx)


class FakeModel:
    """The ``Model`` seam, for limits that need a price or a slow model."""

    def __init__(self, *replies: tuple[dict[str, Any], float]) -> None:
        self.replies = list(replies)

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> ModelReply:
        (name, args), cost = (
            self.replies.pop(0) if self.replies else (("finish", {"summary": "end"}), 0.0)
        )
        call = {
            "id": f"c{len(self.replies)}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }
        return ModelReply({"role": "assistant", "content": None, "tool_calls": [call]}, cost)


async def test_cost_limit(repo: Path) -> None:
    model = FakeModel(*[(("list_files", {}), 0.6)] * 3)
    with pytest.raises(LimitReached, match=r"cost limit reached \(maxCostUsd = 1") as info:
        await BuiltinBackend(model).run(make_ctx(repo, Events(), maxCostUsd=1.0))
    assert info.value.steps == 2 and info.value.cost_usd == pytest.approx(1.2)


async def test_time_limit_kills_the_running_command(repo: Path) -> None:
    # found by a unique argument: inside the sandbox `$$` is a pid of its own namespace
    mark = f"60.{os.getpid()}{time.monotonic_ns() % 10**6}"
    model = FakeModel((("run_command", {"command": f"sleep {mark}"}), 0.0))
    started = time.monotonic()
    with pytest.raises(LimitReached, match=r"time limit reached \(timeoutS = 1\)"):
        await BuiltinBackend(model).run(make_ctx(repo, Events(), timeoutS=1.0))
    assert time.monotonic() - started < 5

    def running() -> bool:
        for entry in Path("/proc").iterdir():
            try:
                if (
                    entry.name.isdigit()
                    and mark.encode() in (entry / "cmdline").read_bytes()
                    and ") Z" not in (entry / "stat").read_text()
                ):
                    return True
            except OSError:
                continue
        return False

    with anyio.fail_after(5):
        while running():
            await anyio.sleep(0.05)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydantic notes from litellm's stream types
async def test_scripted_model_streams(server: ScriptedModel) -> None:
    litellm = await model_mod.load_litellm()
    server.add(tool_call("edit_file", {"path": "a", "oldText": "b", "newText": "c"}))
    stream = await litellm.acompletion(
        model="openai/scripted-model",
        api_base=server.url,
        api_key="sk-test",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    call = litellm.stream_chunk_builder(chunks).choices[0].message.tool_calls[0]
    assert call.function.name == "edit_file"
    assert json.loads(call.function.arguments) == {"path": "a", "oldText": "b", "newText": "c"}
    assert server.requests[0]["stream"] is True


def test_scripted_model_runs_as_a_process(tmp_path: Path) -> None:
    script, port_file, log = (
        tmp_path / "script.json",
        tmp_path / "port",
        tmp_path / "requests.jsonl",
    )
    script.write_text(json.dumps([{"content": "hello"}, {"status": 500}]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "handoff.offline_model",
            "--script",
            str(script),
            "--port-file",
            str(port_file),
            "--requests-file",
            str(log),
        ],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port_file.read_text()}/v1/chat/completions"

        def post() -> tuple[int, dict[str, Any]]:
            req = urllib.request.Request(
                url,
                data=b'{"model": "m", "messages": []}',
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, json.load(r)
            except urllib.error.HTTPError as e:
                return e.code, json.load(e)

        code, body = post()
        assert code == 200 and body["choices"][0]["message"]["content"] == "hello"
        assert post()[0] == 500
        code, body = post()
        assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "finish"
        assert len(log.read_text().splitlines()) == 3
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
