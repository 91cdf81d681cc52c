"""Presets: the coding agents developers already use, ready as ``agent = "NAME"``.

Each preset is an :class:`~.config.AgentSpec` with its documented argv, its install line and the
variables it needs (passed to it although they look like secrets: they are its own). An
``[agents.NAME]`` table overrides any of its keys. The six ACP presets speak the Agent Client
Protocol; ``aider``, ``claude-cli``, ``codex-cli``, ``gemini-cli``, ``copilot-cli`` and
``opencode-cli`` are command agents given the whole brief.

:func:`check_agent` says whether an agent can run here (before anything is made for a
session); :func:`agents_report` is what ``handoff agents`` lists.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping
from typing import Any

from .config import AgentSpec, Config

# a GitHub login's token, or a key for your own model endpoint (BYOK)
_COPILOT_NEEDS = [
    "COPILOT_GITHUB_TOKEN",
    "GH_TOKEN",
    "GITHUB_TOKEN",
    "COPILOT_PROVIDER_API_KEY",
    "COPILOT_PROVIDER_BEARER_TOKEN",
]

_PRESETS: dict[str, dict[str, Any]] = {
    # -- ACP agents ---------------------------------------------------------------------
    "claude": dict(
        acp=["claude-code-acp"],
        alternatives=[["claude-agent-acp"]],  # the adapter's new name (@agentclientprotocol/...)
        install="npm install -g @zed-industries/claude-code-acp  "
        "(or @agentclientprotocol/claude-agent-acp)",
        needs=["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"],
        docs="Claude Code through Zed's ACP adapter; permission requests follow `permissions`",
    ),
    "codex": dict(
        acp=["codex-acp"],
        install="npm install -g @zed-industries/codex-acp",
        needs=["OPENAI_API_KEY", "CODEX_API_KEY"],
        docs="OpenAI Codex through Zed's ACP adapter; it writes files itself, in its sandbox",
    ),
    "gemini": dict(
        acp=["gemini", "--acp", "--skip-trust"],
        install="npm install -g @google/gemini-cli",
        needs=["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        docs="Gemini CLI in ACP mode; `--skip-trust`: each worktree is a new folder",
    ),
    "copilot": dict(
        acp=["copilot", "--acp"],
        install="npm install -g @github/copilot",
        needs=_COPILOT_NEEDS,
        docs="GitHub Copilot CLI in ACP mode: a GitHub login or token; or your own model "
        "(COPILOT_PROVIDER_BASE_URL, COPILOT_PROVIDER_TYPE, COPILOT_MODEL; "
        "COPILOT_OFFLINE=true keeps it off the network)",
    ),
    "goose": dict(
        acp=["goose", "acp"],
        install="not on npm or PyPI: a release binary, "
        "`curl -fsSL https://github.com/aaif-goose/goose/releases/download/stable/download_cli.sh"
        " | CONFIGURE=false bash` (puts `goose` in ~/.local/bin), then `goose configure`",
        needs=["GOOSE_PROVIDER", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY"],
        docs="goose in ACP mode; provider and model from its own config or GOOSE_PROVIDER/GOOSE_MODEL",
    ),
    "opencode": dict(
        acp=["opencode", "acp"],
        install="npm install -g opencode-ai",
        needs=["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "OPENROUTER_API_KEY"],
        # OpenCode allows edits and shell commands itself unless told to ask: asking makes
        # `permissions` decide, and its edits then come through fs/write_text_file
        env={"OPENCODE_PERMISSION": '{"edit": "ask", "bash": "ask", "webfetch": "ask"}'},
        docs="OpenCode in ACP mode; provider and model from its own config "
        "(~/.config/opencode/opencode.json: any provider, or an OpenAI-compatible baseURL); "
        "its edits and commands are asked for, so `permissions` decides",
    ),
    # -- command agents, given the whole brief ---------------------------------------------
    "aider": dict(
        command=[
            "aider",
            "--yes-always",
            "--no-auto-commits",
            "--no-gitignore",
            "--no-check-update",
            "--no-show-release-notes",
            "--no-analytics",
            "--no-pretty",
            "--message-file",
            "{task_file}",
        ],
        install="python -m pip install aider-install && aider-install  (or pipx install aider-chat)",
        needs=["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "OPENROUTER_API_KEY"],
        docs="aider, one message (the brief); no commits, no .gitignore edits",
    ),
    "claude-cli": dict(
        command=[
            "claude",
            "-p",
            "{brief}",
            "--permission-mode",
            "acceptEdits",
            "--allowedTools",
            "Bash",
        ],
        install="npm install -g @anthropic-ai/claude-code",
        needs=["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"],
        docs="`claude -p` with the brief; edits and Bash allowed (its cwd is the worktree)",
    ),
    "codex-cli": dict(
        command=[
            "codex",
            "exec",
            "--sandbox",
            "workspace-write",
            "--skip-git-repo-check",
            "{brief}",
        ],
        install="npm install -g @openai/codex",
        needs=["OPENAI_API_KEY", "CODEX_API_KEY"],
        docs="`codex exec` with the brief, in codex's workspace-write sandbox",
    ),
    "gemini-cli": dict(
        command=["gemini", "--skip-trust", "--approval-mode", "yolo", "-p", "{brief}"],
        install="npm install -g @google/gemini-cli",
        needs=["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        docs="`gemini -p` with the brief; tools auto-approved, `--skip-trust`",
    ),
    "copilot-cli": dict(
        command=[
            "copilot",
            "-p",
            "{brief}",
            "--allow-all-tools",
            "--no-ask-user",
            "--no-auto-update",
            "--silent",
        ],
        install="npm install -g @github/copilot",
        needs=_COPILOT_NEEDS,
        docs="`copilot -p` with the brief; its tools allowed without asking, paths kept to its "
        "cwd (the worktree); model as for `copilot`",
    ),
    "opencode-cli": dict(
        command=["opencode", "run", "{brief}"],
        install="npm install -g opencode-ai",
        needs=["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "OPENROUTER_API_KEY"],
        docs="`opencode run` with the brief; its own permission settings apply (edits allowed "
        "by default); provider as for `opencode`",
    ),
}

ACP_PRESETS = ("claude", "codex", "gemini", "copilot", "goose", "opencode")
NAMES = tuple(_PRESETS)


def _resolve(argv: list[str], alternatives: list[list[str]]) -> list[str]:
    """The first of ``argv`` and its alternatives whose executable is found."""
    for option in (argv, *alternatives):
        if shutil.which(option[0]):
            return list(option)
    return list(argv)


def preset(name: str) -> AgentSpec | None:
    """A fresh :class:`AgentSpec` for preset ``name``; None if there is none."""
    p = _PRESETS.get(name)
    if p is None:
        return None
    spec = AgentSpec(
        name,
        preset=True,
        install=p["install"],
        needs=list(p["needs"]),
        docs=p["docs"],
        passEnv=list(p["needs"]),
        env=dict(p.get("env", {})),
    )
    if "acp" in p:
        spec.acp = _resolve(p["acp"], p.get("alternatives", []))
    else:
        spec.command = list(p["command"])
    return spec


class AgentUnavailable(Exception):
    """The agent cannot run here; ``str(exc)`` says why and what to do."""


def _which(argv0: str, spec: AgentSpec | None, env: Mapping[str, str] | None = None) -> str | None:
    path = (spec.env.get("PATH") if spec else None) or (os.environ if env is None else env).get(
        "PATH", os.defpath
    )
    if os.sep in argv0:
        return argv0 if os.access(argv0, os.X_OK) and os.path.isfile(argv0) else None
    return shutil.which(argv0, path=path)


def check_agent(name: str, config: Config, env: Mapping[str, str] | None = None) -> None:
    """Raise :class:`AgentUnavailable` when agent ``name`` cannot run: an unknown name, a
    missing executable (on ``env``'s PATH: the delegating client's), the built-in agent without
    a model."""
    if name == "builtin":
        if not config.model:
            raise AgentUnavailable(
                "the built-in agent has no model: set `model` (e.g. HANDOFF_MODEL=openai/gpt-4o-mini, "
                'or `model = "..."` in .handoff.toml), or choose an agent such as '
                f'`agent = "claude"` (presets: {", ".join(NAMES)})'
            )
        return
    spec = config.agent_spec(name)
    if spec is None:
        raise AgentUnavailable(
            f"no agent called `{name}`: add it under `agents` in .handoff.toml, or use a preset "
            f"({', '.join(NAMES)})"
        )
    argv0 = spec.argv[0]
    if _which(argv0, spec, env) is None:
        how = f"; install it: {spec.install}" if spec.install else ""
        raise AgentUnavailable(f"agent `{name}` cannot start: `{argv0}` was not found on PATH{how}")


@dataclasses.dataclass
class AgentRow:
    name: str
    kind: str  # "acp" | "command" | "builtin"
    source: str  # "preset" | "configured" | "preset, configured" | "built-in"
    argv: list[str]
    found: str | None  # the executable's path; None when missing
    install: str
    needs: list[str]
    needsSet: list[str]  # which of `needs` are set in this environment
    default: bool
    docs: str = ""  # what it is and how it is set up (presets)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def agents_report(config: Config, env: Mapping[str, str] | None = None) -> list[AgentRow]:
    """Every agent this configuration can use: the built-in one, the presets and the configured
    agents, with whether each executable is found, how to install it and what it needs, in
    ``env`` (the asking client's environment, as a delegation from it would run; ours when
    None)."""
    env = os.environ if env is None else env
    rows = [
        AgentRow(
            "builtin",
            "builtin",
            "built-in",
            [],
            "(in Handoff)" if config.model else None,
            "set `model` (any litellm model string)",
            ["HANDOFF_MODEL"],
            ["HANDOFF_MODEL"] if config.model else [],
            config.agent == "builtin",
        )
    ]
    for name in [*NAMES, *sorted(n for n in config.agents if n not in _PRESETS)]:
        spec = config.agent_spec(name)
        assert spec is not None
        source = (
            ("preset, configured" if name in config.agents else "preset")
            if name in _PRESETS
            else "configured"
        )
        argv = spec.argv
        rows.append(
            AgentRow(
                name,
                spec.kind,
                source,
                argv,
                _which(argv[0], spec, env),
                spec.install,
                list(spec.needs),
                [v for v in spec.needs if env.get(v) or v in spec.env],
                config.agent == name,
                spec.docs,
            )
        )
    return rows


def format_report(rows: list[AgentRow]) -> str:
    """``handoff agents`` as text: one block per agent."""
    out = []
    for r in rows:
        mark = "*" if r.default else " "
        if r.kind == "builtin":
            state = "ready" if r.found else "no model set"
        else:
            state = (
                f"found: {r.found}"
                if r.found
                else f"NOT FOUND: `{r.argv[0]}` is not installed (not on PATH)"
            )
        out.append(f"{mark} {r.name:<11} {r.kind:<8} {r.source:<19} {state}")
        if r.argv:
            out.append(f"    argv: {' '.join(r.argv)}")
        if r.docs:
            out.append(f"    {r.docs}")
        if not r.found and r.install:
            out.append(f"    {'install' if r.kind != 'builtin' else 'to use it'}: {r.install}")
        if r.needs:
            have = f" (set: {', '.join(r.needsSet)})" if r.needsSet else " (none set)"
            out.append(f"    needs one of: {', '.join(r.needs)}{have}")
    return "\n".join(out)
