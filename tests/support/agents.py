"""Command agents for tests: small Python scripts run as real processes in the worktree."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any


def write_agent(folder: Path, name: str, body: str) -> list[str]:
    """Write a Python agent script and return the argv that runs it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text("import os, sys, time, pathlib, json\n" + textwrap.dedent(body))
    return [sys.executable, str(path)]


def toml_agents(agents: dict[str, list[str]], default: str | None = None, **scalars) -> str:
    """A .handoff.toml selecting command agents."""
    lines = []
    if default:
        lines.append(f'agent = "{default}"')
    for key, value in scalars.items():
        lines.append(
            f"{key} = {value!r}" if not isinstance(value, bool) else f"{key} = {str(value).lower()}"
        )
    for name, argv in agents.items():
        quoted = ", ".join('"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"' for a in argv)
        lines.append(f"[agents.{name}]\ncommand = [{quoted}]")
    return "\n".join(lines) + "\n"


def trust_repo(repo: Path) -> None:
    """What the developer's `handoff trust` does: trust the repository's Handoff settings as
    they are now (a repository's own file may choose its agents only then)."""
    from handoff.agent import trust

    trust.trust(repo)


def command_manager(repo: Path, agents: dict[str, list[str]], default: str, **scalars: Any):
    """A loaded SessionManager for ``repo`` whose .handoff.toml selects command agents."""
    from handoff.agent import config as config_mod
    from handoff.agent.manager import SessionManager

    (repo / ".handoff.toml").write_text(toml_agents(agents, default, **scalars))
    trust_repo(repo)
    cfg, messages = config_mod.load(repo)
    assert messages == []
    mgr = SessionManager(repo, cfg)
    mgr.load()
    return mgr


def processes_with(mark: str) -> list[int]:
    """Live (not zombie) processes with ``mark`` among their arguments."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and mark.encode() in (entry / "cmdline").read_bytes().split(b"\0")
                and ") Z" not in (entry / "stat").read_text()
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
