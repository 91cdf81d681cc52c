"""Hunk-by-hunk review in real Neovim 0.11 (headless, the plugin as shipped, the real server)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.agents import trust_repo
from tests.support.git import git
from tests.support.nvim_client import handoff_lsp, run_lua, sample_text
from tests.support.paths import SUPPORT

SUM = sample_text().replace("return a + b\n", "return a + b  # sum\n")


@pytest.mark.editor
def test_review_hunks_in_neovim(nvim: Path, repo: Path, tmp_path: Path) -> None:
    agent = SUPPORT / "nvim" / "review_agent.py"
    (repo / ".handoff.toml").write_text(
        'agent = "review"\n\n[agents.review]\n'
        f"command = [{json.dumps(sys.executable)}, {json.dumps(str(agent))}]\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "handoff config")
    trust_repo(repo)  # the repository's own agent runs only once its settings are trusted
    work = tmp_path / "nvim"
    task_copy = tmp_path / "follow-up-task.txt"
    result, diagnosis = run_lua(nvim, "review.lua", work, repo, {
        "HANDOFF_LSP": str(handoff_lsp()),
        "HANDOFF_TEST_FILE": str(repo / "app.py"),
        "REVIEW_TASK_COPY": str(task_copy),
    })  # fmt: skip
    print(diagnosis)
    assert result.get("ok"), result.get("errors")

    # The code action on a bare selection asked for the instruction, and the session ran with it.
    assert result["prompts"] == ["Handoff instruction: "]
    assert result["session_ready"]["title"] == "comment both results"

    # Both changes showed as virtual lines under the lines they replace; the buffer was untouched.
    assert [(v["row"], v["text"], v["hl"]) for v in result["virtual"]] == [
        (1, "    return a + b  # sum", "DiffAdd"),
        (5, "    return a - b  # difference", "DiffAdd"),
    ]
    assert result["buffer_ready"] == sample_text()

    # ]h went to each change; :Handoff accept took the first only.
    assert (result["first_jump"], result["second_jump"]) == (2, 6)
    assert result["after_accept"] == SUM
    assert result["listed"].endswith("1 change left"), result["listed"]

    # :Handoff reject <reason>: the agent was followed up with the change and the reason ...
    task = task_copy.read_text()
    assert task.startswith("The developer rejected this change:"), task
    assert "+    return a - b  # difference" in task
    assert "Reason: a comment that repeats the code is noise; say what it means" in task
    # ... and its new change shows the same way, while the buffer holds exactly the accepted one.
    assert [v["text"] for v in result["virtual_after"]] == ["    return a - b  # a minus b"]
    assert result["buffer_final"] == SUM
    assert "followUp" in result["actions_final"] and "applyHunks" in result["actions_final"]
    hints = [d for d in result["diagnostics"] if d["severity"] == 4]
    assert [d["lnum"] for d in hints] == [5]
    assert (repo / "app.py").read_text() == sample_text()  # the disk was not touched
