"""Fixtures every test gets (a plugin of the root conftest): a private HANDOFF_STATE_DIR and HOME
per test, the daemon a test started stopped after it, and a real git repository (``repo``)."""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

import pytest

from .git import GIT_ENV, git


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Every test gets its own HANDOFF_STATE_DIR and git identity; no real HOME config."""
    state = tmp_path_factory.mktemp("state")
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HANDOFF_STATE_DIR", str(state))
    monkeypatch.setenv("HOME", str(home))
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    for key in ("HANDOFF_MODEL", "HANDOFF_API_BASE", "HANDOFF_API_KEY", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(key, raising=False)
    yield
    # The session daemon a test's editors or CLI started for this state folder ends with the test.
    from handoff.agent.client import stop_daemon

    stop_daemon(state)


@pytest.fixture(scope="session", autouse=True)
def _close_model_clients():
    """At the end, close the HTTP clients litellm cached for the built-in agents that ran in this
    process (their keep-alive sockets to the scripted models would be left to the exit)."""
    yield
    litellm = sys.modules.get("litellm")
    cache = getattr(getattr(litellm, "in_memory_llm_clients_cache", None), "cache_dict", {})
    for client in list(cache.values()):
        close = getattr(client, "close", None)
        if callable(close) and not inspect.iscoroutinefunction(close):
            close()


@pytest.fixture
def state_dir() -> Path:
    return Path(os.environ["HANDOFF_STATE_DIR"])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit: ``app.py`` and ``README.md``."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "app.py").write_text(
        "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
    )
    (root / "README.md").write_text("# sample\n")
    (root / ".gitignore").write_text("*.log\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root
