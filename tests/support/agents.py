"""Command agents for tests: small Python scripts run as real processes in the worktree."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path


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
        lines.append(f"{key} = {value!r}" if not isinstance(value, bool) else f"{key} = {str(value).lower()}")
    for name, argv in agents.items():
        quoted = ", ".join('"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"' for a in argv)
        lines.append(f"[agents.{name}]\ncommand = [{quoted}]")
    return "\n".join(lines) + "\n"
