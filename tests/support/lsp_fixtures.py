"""Fixtures of the LSP end-to-end tests (a plugin of the root conftest: every test may ask for them by name)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsprotocol import types

from .lsp_agents import Agent
from .lsp_client import CLIENTS, Editor


@pytest.fixture(params=CLIENTS)
def caps(request) -> str:
    return request.param


@pytest.fixture
def agent(repo: Path, tmp_path: Path) -> Agent:
    return Agent(repo, tmp_path / "agent")


@pytest.fixture
async def editor(caps: str, repo: Path):
    ed = await Editor.start(caps, repo)
    yield ed
    await ed.stop()


def rng(l1: int, c1: int, l2: int, c2: int) -> types.Range:
    return types.Range(
        start=types.Position(line=l1, character=c1), end=types.Position(line=l2, character=c2)
    )


def titled(actions: list[types.CodeAction], prefix: str) -> types.CodeAction:
    found = [a for a in actions if a.title.startswith(prefix)]
    assert found, f"no action {prefix!r} in {[a.title for a in actions]}"
    return found[0]
