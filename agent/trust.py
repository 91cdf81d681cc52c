"""Workspace trust: a repository's own files choose what runs only once the developer said so.

Settings that run programs or widen what an agent may do (``GUARDED``) are taken from
``.handoff.toml`` / ``[tool.handoff]`` only after ``handoff trust`` recorded a hash of that
file's Handoff settings in the state folder (``trust.json``); a changed file asks again, as
direnv does. The user's own settings (editor, environment) always apply.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Keys of a repository file that run programs, widen an agent's reach, or choose where your code,
# your key and your money go. Some only when they widen (``_HARMLESS``): ``agent`` naming the
# built-in agent, ``commandPolicy`` narrowing, ``executor = "local"``, ``autoApply`` off,
# ``maxCostUsd`` at most the default.
#   agent       any other agent is a program (a preset too: your installed claude/codex/... with
#               your credentials and your bill, chosen by the repository)
#   agents      `command`/`acp` argv, `env`, `passEnv` (and the rest of such a table)
#   model       which provider gets your code and the key of your environment, and bills you
#   apiBase     the host your API key is sent to
#   autoApply   results written to your files without your review
#   maxCostUsd  raising how much of your money a session may spend
#   executor, ray.*  where agents run (a cluster's address, what is installed there, its share)
#   worktree.setup   a command; worktree.include: ignored files (.env, keys) copied to agents
# Not guarded, because they cannot widen: `permissions` (the default, "worktree", is already
# the widest; a repository can only narrow it, and the user's own setting comes later and wins),
# `exclude` (keeps files out of results), limits (`maxSteps`, `timeoutS`, `maxParallel`),
# `todo.*`, `pool.size`, `notify`, `keepFinishedDays` (finished sessions only).
GUARDED = (
    "agent",
    "agents",
    "commandPolicy",
    "passEnv",
    "testCommand",
    "model",
    "apiBase",
    "autoApply",
    "maxCostUsd",
    "executor",
    "ray.address",
    "ray.runtimeEnv",
    "ray.numCpus",
    "ray.memoryMb",
    "worktree.setup",
    "worktree.include",
)
_NARROWING_POLICIES = ("sandbox", "deny")


def _harmless(key: str, value: Any) -> bool:
    """A guarded key whose value widens nothing."""
    if key == "agent":
        return bool(value == "builtin")
    if key == "commandPolicy":
        return value in _NARROWING_POLICIES
    if key == "executor":
        return bool(value == "local")
    if key == "autoApply":
        return value is False or (isinstance(value, str) and value.lower() in _OFF)
    if key == "maxCostUsd":
        from .config import Config

        return isinstance(value, (int, float)) and value <= Config.maxCostUsd
    return False


_OFF = ("false", "0", "no", "off")
KEEP = 20  # trusted contents remembered per file


def store_path(root: Path | None = None) -> Path:
    """Where trust is recorded (``trust.json`` in the state folder)."""
    return _store(root)


@dataclasses.dataclass
class TrustState:
    """What ``check`` found: the settings file in effect and whether it is trusted."""

    file: Path | None  # the file Handoff reads (None: no settings file)
    trusted: bool
    guarded: list[str]  # the guarded keys it sets (ignored while untrusted)

    @property
    def needs_trust(self) -> bool:
        return bool(self.guarded) and not self.trusted

    def message(self) -> str:
        return (
            f"{self.file.name if self.file else 'the repository'} sets "
            f"{', '.join(f'`{k}`' for k in self.guarded)}, which run programs, widen what "
            "agents may do or choose where your code and key go: ignored until you trust this repository's Handoff settings "
            f"(run `handoff trust` in {self.file.parent if self.file else '.'})"
        )


def _store(root: Path | None = None) -> Path:
    from .store import state_root

    return (root or state_root()) / "trust.json"


def digest(data: Mapping[str, Any]) -> str:
    """The hash recorded for a file's Handoff settings (canonical JSON of the table)."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _key(path: Path) -> str:
    return os.path.realpath(path)


def _records(root: Path | None = None) -> dict[str, Any]:
    try:
        data = json.loads(_store(root).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def guarded_keys(data: Mapping[str, Any]) -> list[str]:
    """The keys of ``data`` (a repository file's settings) that need trust."""
    found = []
    for key in GUARDED:
        head, _, sub = key.partition(".")
        value = data.get(head)
        if sub:
            if isinstance(value, Mapping) and sub in value:
                found.append(key)
            elif f"{head}.{sub}" in data:
                found.append(key)
            continue
        if key not in data or _harmless(key, value):
            continue
        found.append(key)
    return found


def without_guarded(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with every guarded key taken out."""
    out = dict(data)
    for key in guarded_keys(data):
        head, _, sub = key.partition(".")
        if sub and isinstance(out.get(head), Mapping):
            out[head] = {k: v for k, v in out[head].items() if k != sub}
            if not out[head]:
                del out[head]
        out.pop(key, None)
    return out


def is_trusted(path: Path, data: Mapping[str, Any], *, root: Path | None = None) -> bool:
    """Whether the developer trusted the settings ``data`` read from the file ``path``."""
    entry = _records(root).get(_key(path))
    return isinstance(entry, dict) and digest(data) in entry.get("sha256", [])


def check(repo_root: Path, *, root: Path | None = None) -> TrustState:
    """The trust of the settings file in effect at ``repo_root``."""
    from .config import read_toml

    data, name = read_toml(Path(repo_root), [])
    if not name:
        return TrustState(None, True, [])
    path = Path(repo_root) / name
    return TrustState(path, is_trusted(path, data, root=root), guarded_keys(data))


def trust(repo_root: Path, *, root: Path | None = None) -> TrustState:
    """Trust the repository's Handoff settings as they are now (``handoff trust``).

    Raises OSError when the state folder cannot be written; ValueError when there is nothing
    to trust or the file cannot be read."""
    from handoff.files import atomic_write

    from .config import read_toml

    messages: list[str] = []
    data, name = read_toml(Path(repo_root), messages)
    if not name:
        raise ValueError(
            "; ".join(messages)
            if messages
            else f"no .handoff.toml or [tool.handoff] in pyproject.toml at {repo_root}: "
            "nothing to trust"
        )
    path = Path(repo_root) / name
    records = _records(root)
    entry = records.get(_key(path))
    kept = entry.get("sha256", []) if isinstance(entry, dict) else []
    # Like direnv, each content trusted stays trusted (the last few): going back to one asks not.
    hashes = [h for h in kept if isinstance(h, str) and h != digest(data)][-(KEEP - 1) :]
    records[_key(path)] = {
        "sha256": [*hashes, digest(data)],
        "trustedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write(_store(root), (json.dumps(records, indent=2, sort_keys=True) + "\n").encode())
    return TrustState(path, True, guarded_keys(data))
