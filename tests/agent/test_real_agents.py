"""The real published agents, as a user runs them: installed from npm (and aider from PyPI) by
.ci/run, against scripted model servers on 127.0.0.1, inside a network namespace with only
loopback (``unshare --net``), so that nothing they try leaves the machine.

Each test delegates one edit through the agent's preset, waits for ``ready`` and applies the
result to the working tree: the file must hold exactly the edit. Skipped only when the agents
are not installed and this is not CI (``CI=true`` makes a missing agent a failure).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agents import trust_repo
from tests.support.paths import ROOT

pytestmark = pytest.mark.real_agent

NPM_BIN = (
    Path(os.environ.get("HANDOFF_AGENTS_NPM", "/var/cache/handoff-agents"))
    / "node_modules"
    / ".bin"
)
AIDER_BIN = Path(os.environ.get("HANDOFF_AGENTS_AIDER", "/var/cache/handoff-aider")) / "bin"
APP = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
TASK = {
    "file": "app.py",
    "old": "    return a + b",
    "new": "    return a + b  # checked",
    "done": "Marked add() as checked.",
}
EDITED = APP.replace("return a + b", "return a + b  # checked")
QUIET = {
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "NO_COLOR": "1",
}
# Claude Code refuses to start as root (CI runs as root) unless told it is in a sandbox
CLAUDE_ROOT = {"IS_SANDBOX": "1"} if os.geteuid() == 0 else {}


@pytest.fixture(autouse=True)
def _agent_homes(tmp_path: Path):
    yield
    shutil.rmtree(ROOT / ".real-agents" / tmp_path.name, ignore_errors=True)


def need(executable: Path) -> None:
    if executable.exists() and shutil.which("unshare"):
        return
    what = f"{executable} (installed by .ci/run)" if not executable.exists() else "unshare"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing in CI")
    pytest.skip(f"{what} is not installed here")


def delegate(
    repo: Path,
    tmp_path: Path,
    toml: str,
    env: dict[str, str],
    instruction: str,
    timeout: float = 90,
    files: dict[str, str] | None = None,
) -> dict:
    (repo / ".handoff.toml").write_text(toml)
    trust_repo(repo)  # what the developer does once the file says what they want
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "repo": str(repo),
                "task": TASK,
                "env": env,
                "instruction": instruction,
                "timeout": timeout - 15,
                "files": files or {},
            }
        )
    )
    unshare = ["unshare", "--net", "--fork"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    proc = subprocess.run(
        [
            *unshare,
            "sh",
            "-c",
            'ip link set lo up && exec "$0" -m tests.support.real_agent_run "$1"',
            sys.executable,
            str(spec),
        ],
        cwd=ROOT,
        env={**os.environ, "PATH": f"{NPM_BIN}:{AIDER_BIN}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_applied(repo: Path, out: dict) -> None:
    assert out["state"] == "ready", json.dumps(out, indent=1)
    assert out["filesChanged"] == ["app.py"], out
    assert out["written"] == ["app.py"] and out["conflicts"] == 0
    assert (repo / "app.py").read_text() == EDITED


def test_claude_code_acp(repo: Path, tmp_path: Path) -> None:
    need(NPM_BIN / "claude-code-acp")
    out = delegate(
        repo,
        tmp_path,
        'agent = "claude"\n',
        {"ANTHROPIC_BASE_URL": "{url}", "ANTHROPIC_API_KEY": "sk-ant-test", **QUIET, **CLAUDE_ROOT},
        "mark add() as checked",
    )
    check_applied(repo, out)
    assert out["steps"] >= 2 and "acp_permission" in out["transcript"]
    assert any(p.startswith("/v1/messages") for p in out["requests"])


def _homes() -> Path:
    """A folder for agents' homes outside /tmp whatever the clone's path is (CI may clone under
    /tmp): beside the agents' npm cache, else in the checkout."""
    cache = (
        Path(os.environ.get("HANDOFF_AGENTS_NPM", "/var/cache/handoff-agents")).parent
        / "handoff-agent-homes"
    )
    try:
        cache.mkdir(parents=True, exist_ok=True)
        return cache
    except OSError:
        return ROOT / ".real-agents"


def codex_home(tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Codex's own configuration: its model provider is the scripted server. Not under /tmp:
    codex refuses to put its sandbox helpers there (then its apply_patch cannot run)."""
    home = _homes() / tmp_path.name / "codex"
    shutil.rmtree(home, ignore_errors=True)
    config = (
        'model = "gpt-5.1-codex"\nmodel_provider = "scripted"\n'
        '[model_providers.scripted]\nname = "scripted"\nbase_url = "{url}/v1"\n'
        'env_key = "OPENAI_API_KEY"\nwire_api = "responses"\nsupports_websockets = false\n'
        "request_max_retries = 0\nstream_max_retries = 0\n"
    )
    return (
        {"OPENAI_API_KEY": "sk-test", "CODEX_HOME": str(home), **QUIET},
        {str(home / "config.toml"): config},
    )


def test_codex_acp(repo: Path, tmp_path: Path) -> None:
    need(NPM_BIN / "codex-acp")
    env, files = codex_home(tmp_path)
    out = delegate(repo, tmp_path, 'agent = "codex"\n', env, "mark add() as checked", files=files)
    check_applied(repo, out)
    assert any(p.endswith("/responses") for p in out["requests"])


def test_claude_command_preset(repo: Path, tmp_path: Path) -> None:
    need(NPM_BIN / "claude")
    out = delegate(
        repo,
        tmp_path,
        'agent = "claude-cli"\n',
        {"ANTHROPIC_BASE_URL": "{url}", "ANTHROPIC_API_KEY": "sk-ant-test", **QUIET, **CLAUDE_ROOT},
        "mark add() as checked",
    )
    check_applied(repo, out)


def test_codex_command_preset(repo: Path, tmp_path: Path) -> None:
    need(NPM_BIN / "codex")
    env, files = codex_home(tmp_path)
    out = delegate(
        repo, tmp_path, 'agent = "codex-cli"\n', env, "mark add() as checked", files=files
    )
    check_applied(repo, out)


GEMINI_SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "privacy": {"usageStatisticsEnabled": False},
    "general": {"disableAutoUpdate": True},
}


@pytest.mark.parametrize("preset", ["gemini-cli", "gemini"])
def test_gemini(repo: Path, tmp_path: Path, preset: str) -> None:
    need(NPM_BIN / "gemini")
    out = delegate(
        repo,
        tmp_path,
        f'agent = "{preset}"\n',
        {"GOOGLE_GEMINI_BASE_URL": "{url}", "GEMINI_API_KEY": "test-key", **QUIET},
        "mark add() as checked",
        files={
            str(Path(os.environ["HOME"]) / ".gemini" / "settings.json"): json.dumps(GEMINI_SETTINGS)
        },
    )
    check_applied(repo, out)


def test_aider_command_preset(repo: Path, tmp_path: Path) -> None:
    need(AIDER_BIN / "aider")
    out = delegate(
        repo,
        tmp_path,
        'agent = "aider"\n[agents.aider]\n'
        'env = {AIDER_MODEL = "openai/scripted", AIDER_EDIT_FORMAT = "diff", AIDER_MAP_TOKENS = "0"}\n',
        {"OPENAI_API_BASE": "{url}/v1", "OPENAI_API_KEY": "sk-test", **QUIET},
        "mark add() as checked",
    )
    check_applied(repo, out)


def copilot_env(tmp_path: Path) -> dict[str, str]:
    """Copilot CLI with your own model (BYOK): an OpenAI-compatible endpoint, the scripted
    server; offline mode, so no GitHub login, telemetry or update check is tried."""
    home = _homes() / tmp_path.name / "copilot"
    shutil.rmtree(home, ignore_errors=True)
    return {
        "COPILOT_OFFLINE": "true",
        "COPILOT_PROVIDER_BASE_URL": "{url}/v1",
        "COPILOT_PROVIDER_API_KEY": "sk-test",
        "COPILOT_MODEL": "gpt-4.1",
        "COPILOT_HOME": str(home),
        **QUIET,
    }


@pytest.mark.parametrize("preset", ["copilot", "copilot-cli"])
def test_copilot(repo: Path, tmp_path: Path, preset: str) -> None:
    need(NPM_BIN / "copilot")
    out = delegate(
        repo,
        tmp_path,
        f'agent = "{preset}"\n',
        copilot_env(tmp_path),
        "mark add() as checked",
        timeout=150,
    )
    check_applied(repo, out)
    assert out["requests"] and all(p == "/v1/chat/completions" for p in out["requests"])
    if preset == "copilot":  # over ACP: its edit asked for, and answered by `permissions`
        assert out["steps"] >= 2 and "acp_permission" in out["transcript"]
    else:
        assert out["summary"] == TASK["done"]


def opencode_config() -> dict:
    """OpenCode's own configuration: a custom OpenAI-compatible provider, the scripted server."""
    return {
        "$schema": "https://opencode.ai/config.json",
        "model": "scripted/scripted-coder",
        "autoupdate": False,
        "share": "disabled",
        "provider": {
            "scripted": {
                "npm": "@ai-sdk/openai-compatible",  # bundled in opencode: nothing to fetch
                "name": "Scripted",
                "options": {"baseURL": "{url}/v1", "apiKey": "sk-test"},
                "models": {"scripted-coder": {"name": "Scripted coder", "tool_call": True}},
            }
        },
    }


OPENCODE_QUIET = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    **QUIET,
}


def test_opencode_command_preset(repo: Path, tmp_path: Path) -> None:
    need(NPM_BIN / "opencode")
    config = Path(os.environ["HOME"]) / ".config" / "opencode" / "opencode.json"
    out = delegate(
        repo,
        tmp_path,
        'agent = "opencode-cli"\n',
        OPENCODE_QUIET,
        "mark add() as checked",
        timeout=150,
        files={str(config): json.dumps(opencode_config())},
    )
    check_applied(repo, out)
    assert out["requests"] and all(p == "/v1/chat/completions" for p in out["requests"])


@pytest.mark.parametrize("permissions", ["worktree", "reject"])
def test_opencode_acp(repo: Path, tmp_path: Path, permissions: str) -> None:
    """The preset makes OpenCode ask before it edits, so `permissions` decides: allowed, the
    edit comes through fs/write_text_file; rejected, nothing changes."""
    need(NPM_BIN / "opencode")
    config = Path(os.environ["HOME"]) / ".config" / "opencode" / "opencode.json"
    out = delegate(
        repo,
        tmp_path,
        f'agent = "opencode"\npermissions = "{permissions}"\n',
        OPENCODE_QUIET,
        "mark add() as checked",
        timeout=150,  # a 180 MB binary that starts slowly on a loaded machine
        files={str(config): json.dumps(opencode_config())},
    )
    assert "acp_permission" in out["transcript"], out
    assert out["requests"] and all(p == "/v1/chat/completions" for p in out["requests"])
    if permissions == "worktree":
        check_applied(repo, out)
        assert out["steps"] >= 2 and "acp_write" in out["transcript"]
    else:
        assert "acp_write" not in out["transcript"], out
        assert out["filesChanged"] == [] and (repo / "app.py").read_text() == APP


def test_handoff_agents_lists_the_installed_agents_and_how_to_install_goose(
    repo: Path,
) -> None:
    """goose is published only as release binaries (not on npm or PyPI), so CI cannot install
    it: `handoff agents` says it is not installed and how to install it, beside the agents
    .ci/run did install."""
    need(NPM_BIN / "opencode")
    env = {**os.environ, "PATH": f"{NPM_BIN}:{AIDER_BIN}:/usr/bin:/bin"}
    if shutil.which("goose", path=env["PATH"]):
        pytest.skip("goose is installed here")
    handoff = Path(sys.executable).parent / "handoff"
    text = subprocess.run(
        [str(handoff), "agents"], cwd=repo, env=env, capture_output=True, text=True, check=True
    ).stdout
    block = text.split("\n  goose ")[1].split("\n  opencode ")[0]
    assert "NOT FOUND: `goose` is not installed (not on PATH)" in block
    assert "install: not on npm or PyPI" in block and "download_cli.sh" in block
    rows = json.loads(
        subprocess.run(
            [str(handoff), "agents", "--json"], cwd=repo, env=env, capture_output=True, text=True
        ).stdout
    )
    found = {r["name"]: r["found"] for r in rows}
    for name in ("claude", "codex", "gemini", "copilot", "opencode"):
        assert (found[name] or "").startswith(str(NPM_BIN)), (name, found)
    assert found["goose"] is None
