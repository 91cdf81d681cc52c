"""External agents' configuration (presets, `agents.NAME` keys, exclude), the secret-name rule,
and command agents as a user meets them: the whole brief, errors that show the real cause."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from handoff.agent import config as config_mod
from handoff.agent.cli import main as cli_main
from handoff.agent.manager import DelegateRequest, SessionManager
from handoff.agent.presets import agents_report
from handoff.agent.secrets import Redactor, is_secret_name
from handoff.agent.session import State

from tests.support.agents import trust_repo, write_agent


def test_secret_names_are_whole_name_parts() -> None:
    for name in (
        "OPENAI_API_KEY",
        "GH_TOKEN",
        "ANTHROPIC_AUTH_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "DB_PASSWORD",
        "PGPASSWORD",
        "AZURE_CREDENTIALS",
        "npm_config__authToken",
        "api_key",
        "SSH_AUTH_SOCK",
        "HANDOFF_API_KEY",
        "KEY",
    ):
        assert is_secret_name(name), name
    for name in (
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS",
        "MAX_THINKING_TOKENS",
        "MONKEY_BUSINESS",
        "HOTKEY",
        "KEYBOARD_LAYOUT",
        "TOKENIZERS_PARALLELISM",
        "PATH",
        "EDITOR",
    ):
        assert not is_secret_name(name), name


def test_store_keeps_exporting_the_redactor() -> None:
    from handoff.agent import store

    assert store.Redactor is Redactor
    assert Redactor(["sk-abcdef"]).text("key sk-abcdef here") == "key *** here"


def write(repo: Path, text: str) -> tuple[config_mod.Config, list[str]]:
    (repo / ".handoff.toml").write_text(text)
    trust_repo(repo)
    return config_mod.load(repo, env={})


def test_agents_keys_env_exclude_permissions_and_unknown_keys(repo: Path) -> None:
    cfg, messages = write(
        repo,
        """
exclude = ["build/"]
permissions = "reject"
[agents.mine]
command = ["mine", "{brief}"]
passenv = ["X_TOKEN"]
env = {MINE_MODE = "fast", MINE_URL = "http://127.0.0.1:9"}
exclude = ["*.tmp"]
permissions = "ask"
[agents.bad]
acp = ["bad"]
env = ["not", "a", "table"]
permissions = "always"
""",
    )
    assert messages == [
        ".handoff.toml: `agents.mine.passenv` is not a known key (known: command, acp, env, passEnv, "
        "exclude, permissions); ignored",
        ".handoff.toml: agent `bad`: `env` must be a table of variables and string values, like "
        '{VAR = "value"}; setting none',
        '.handoff.toml: agent `bad`: `permissions` must be one of "worktree", "reject", "ask"; '
        "using the default",
    ]
    mine = cfg.agents["mine"]
    assert mine.env == {"MINE_MODE": "fast", "MINE_URL": "http://127.0.0.1:9"}
    assert mine.passEnv == [] and mine.permissions == "ask" and mine.kind == "command"
    assert cfg.permissions == "reject" and cfg.agents["bad"].permissions is None
    assert cfg.exclude_for("mine") == [".aider*", "build/", "*.tmp"]


def test_presets_need_no_agents_table_and_can_be_overridden(repo: Path) -> None:
    cfg, messages = write(repo, 'agent = "codex"\n')
    assert messages == [] and cfg.agent == "codex"
    spec = cfg.agent_spec("codex")
    assert spec.preset and spec.acp == ["codex-acp"] and "OPENAI_API_KEY" in spec.passEnv
    assert cfg.agent_spec("gemini").acp == ["gemini", "--acp", "--skip-trust"]
    cfg, messages = write(
        repo,
        """
agent = "claude"
[agents.claude]
passEnv = ["ANTHROPIC_API_KEY", "MY_PROXY_TOKEN"]
env = {ANTHROPIC_BASE_URL = "http://127.0.0.1:8080"}
[agents.codex]
command = ["codex", "exec", "{brief}"]
""",
    )
    assert messages == []
    claude = cfg.agent_spec("claude")
    assert claude.acp == ["claude-code-acp"] and claude.passEnv == [
        "ANTHROPIC_API_KEY",
        "MY_PROXY_TOKEN",
    ]
    assert claude.env == {"ANTHROPIC_BASE_URL": "http://127.0.0.1:8080"} and claude.install
    assert cfg.agent_spec("codex").kind == "command" and cfg.agent_spec("codex").acp is None
    cfg, messages = write(repo, 'agent = "nosuch"\n')
    assert messages == [
        "`agent` names `nosuch`, which is neither in `agents` nor a preset; using the "
        "built-in agent"
    ]


def test_agents_report_lists_presets_and_configured_agents(
    repo: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    (repo / ".handoff.toml").write_text(
        f'agent = "local"\n[agents.local]\ncommand = ["{sys.executable}", "-c", "print(1)"]\n'
    )
    trust_repo(repo)
    cfg, _ = config_mod.load(repo, env={})
    rows = {r.name: r for r in agents_report(cfg)}
    assert set(rows) >= {
        "builtin",
        "claude",
        "codex",
        "gemini",
        "copilot",
        "goose",
        "opencode",
        "local",
    }
    assert rows["local"].found == sys.executable and rows["local"].default
    assert rows["local"].source == "configured" and rows["copilot"].source == "preset"
    # found on the PATH of the environment asked about (the editor's, sent to the daemon)
    bin_dir = tmp_path / "editor-bin"
    bin_dir.mkdir()
    (bin_dir / "goose").write_text("#!/bin/sh\n")
    (bin_dir / "goose").chmod(0o755)
    seen = {r.name: r for r in agents_report(cfg, {"PATH": str(bin_dir), "GOOSE_PROVIDER": "x"})}
    assert seen["goose"].found == str(bin_dir / "goose") and seen["goose"].needsSet == [
        "GOOSE_PROVIDER"
    ]
    assert seen["opencode"].found is None
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.chdir(repo)
    assert cli_main(["agents", "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["copilot"]["found"] is None
    assert listed["copilot"]["install"] == "npm install -g @github/copilot"
    assert cli_main(["agents"]) == 0
    text = capsys.readouterr().out
    assert (
        "copilot" in text
        and "NOT FOUND" in text
        and "install: npm install -g @github/copilot" in text
    )


def manager(repo: Path, text: str) -> SessionManager:
    cfg, messages = write(repo, text)
    assert messages == [], messages
    mgr = SessionManager(repo, cfg)
    mgr.load()
    return mgr


def toml_argv(argv: list[str]) -> str:
    return "[" + ", ".join(json.dumps(a) for a in argv) + "]"


async def test_command_agent_gets_the_whole_brief_its_env_and_a_record_of_dropped_names(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOME_SERVICE_API_KEY", "sk-very-secret-value")
    monkeypatch.setenv("CLAUDE_CODE_MAX_OUTPUT_TOKENS", "64000")
    monkeypatch.setenv("PWD", str(repo))  # the developer's folder: never the agent's
    seen = tmp_path / "seen.json"
    argv = write_agent(
        tmp_path / "bin",
        "brief",
        f"""
        pathlib.Path({str(seen)!r}).write_text(json.dumps({{"argv": sys.argv[1:], "env": dict(os.environ)}}))
        print("token", os.environ["B_TOKEN"])
        print("done")
    """,
    ) + ["{brief}"]
    mgr = manager(
        repo,
        f'agent = "b"\n[agents.b]\ncommand = {toml_argv(argv)}\n'
        'env = {B_MODE = "x", B_TOKEN = "tok-set-in-env-table"}\n',
    )
    rng = {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 16}}
    s = await mgr.wait(mgr.delegate(DelegateRequest("tidy add", file="app.py", range=rng)).id)
    assert s.state is State.READY, s.error
    got = json.loads(seen.read_text())
    assert got["argv"] == [(mgr.store.session_dir(s.id) / "task.md").read_text()]
    assert "tidy add" in got["argv"][0] and "def add(a, b):" in got["argv"][0]
    assert got["env"]["B_MODE"] == "x" and got["env"]["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "64000"
    assert "SOME_SERVICE_API_KEY" not in got["env"]
    assert got["env"]["PWD"] == s.worktree  # agents that trust PWD (opencode run) stay in it
    (cmd,) = [e for e in mgr.store.read_transcript(s.id) if e["type"] == "command"]
    assert "SOME_SERVICE_API_KEY" in cmd["envDropped"]
    assert got["env"]["B_TOKEN"] == "tok-set-in-env-table"
    transcript = mgr.store.transcript_path(s.id).read_text()
    assert "sk-very-secret-value" not in transcript and "tok-set-in-env-table" not in transcript
    (exit_,) = [e for e in mgr.store.read_transcript(s.id) if e["type"] == "command_exit"]
    assert exit_["stdout"] == "token ***\ndone\n"  # what the agent printed, the value hidden


async def test_command_agent_error_shows_stdout_and_stderr_without_colours(
    repo: Path, tmp_path: Path
) -> None:
    argv = write_agent(
        tmp_path / "bin",
        "notlogged",
        """
        print("\\x1b[31mNot logged in\\x1b[0m \\x1b[1m· Please run /login\\x1b[22m", flush=True)
        print("warning: \\x1b[33mold config\\x1b[0m", file=sys.stderr)
        sys.exit(1)
    """,
    )
    mgr = manager(repo, f'agent = "n"\n[agents.n]\ncommand = {toml_argv(argv)}\n')
    s = await mgr.wait(mgr.delegate(DelegateRequest("do it")).id)
    assert s.state is State.FAILED
    assert s.error == (
        "agent `n` exited with code 1:\nstdout:\nNot logged in · Please run /login\n"
        "stderr:\nwarning: old config"
    )


async def test_exclude_keeps_scratch_files_out_of_the_result(repo: Path, tmp_path: Path) -> None:
    argv = write_agent(
        tmp_path / "bin",
        "scratchy",
        """
        p = pathlib.Path("app.py"); p.write_text(p.read_text() + "# edited\\n")
        pathlib.Path(".aider.chat.history.md").write_text("chat")
        pathlib.Path(".aider.tags.cache.v4").mkdir(); pathlib.Path(".aider.tags.cache.v4/cache.db").write_bytes(b"\\0\\1")
        pathlib.Path("sub").mkdir(); pathlib.Path("sub/.aider.input.history").write_text("x")
        pathlib.Path("scratch").mkdir(); pathlib.Path("scratch/t.txt").write_text("t")
        pathlib.Path("keep.tmp.txt").write_text("kept")
        pathlib.Path("x.tmp").write_text("dropped")
        print("edited")
    """,
    )
    mgr = manager(
        repo,
        f'agent = "s"\nexclude = ["scratch/"]\n[agents.s]\ncommand = {toml_argv(argv)}\n'
        'exclude = ["*.tmp"]\n',
    )
    s = await mgr.wait(mgr.delegate(DelegateRequest("edit")).id)
    assert s.state is State.READY, s.error
    assert sorted(s.filesChanged) == sorted(
        [(repo / "app.py").as_uri(), (repo / "keep.tmp.txt").as_uri()]
    )


async def test_the_editor_lists_the_agents_through_the_daemon(repo: Path):
    from tests.support.lsp_client import Editor

    editor = await Editor.start("neovim", repo)
    try:
        rows = (await editor.command("handoff.agents", {"uri": (repo / "app.py").as_uri()}))[
            "agents"
        ]
        names = [r["name"] for r in rows]
        assert names[0] == "builtin" and {
            "claude",
            "codex",
            "gemini",
            "copilot",
            "goose",
            "opencode",
        } <= set(names)
        builtin = rows[0]
        assert builtin["default"] and builtin["found"] is None  # no model set in this test
    finally:
        await editor.stop()
