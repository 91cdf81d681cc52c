"""Real Neovim and the session daemon: delegate, quit Neovim while the agent works, start Neovim
again: the session is listed (ready) and applies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from handoff.agent.client import status

from tests.support.nvim_client import APP_AFTER, handoff_lsp, run_lua, sample_text


def phase(nvim: Path, sample: Path, tmp_path: Path, name: str) -> dict:
    work = tmp_path / name
    work.mkdir()
    (work / "expected.txt").write_text(APP_AFTER)
    result, diagnosis = run_lua(nvim, "reopen.lua", work, sample, {
        "HANDOFF_LSP": str(handoff_lsp()),
        "HANDOFF_TEST_FILE": str(sample / "app.py"),
        "HANDOFF_TEST_EXPECTED": str(work / "expected.txt"),
        "HANDOFF_TEST_PHASE": name,
    })  # fmt: skip
    print(diagnosis)
    assert result and result["ok"], result.get("errors")
    return result


@pytest.mark.editor
def test_a_session_outlives_neovim(
    nvim: Path, sample: Path, tmp_path: Path, state_dir: Path
) -> None:
    first = phase(nvim, sample, tmp_path, "delegate")
    [session] = first["sessions"]
    assert "running" in first["status_running"], first
    assert first["buffer"] == sample_text()

    # Neovim has quit; the agent goes on and finishes in the daemon.
    deadline = time.monotonic() + 60
    while (st := status(state_dir)) is None or st["sessions"].get("ready") != 1:
        assert time.monotonic() < deadline, st
        time.sleep(0.05)

    second = phase(nvim, sample, tmp_path, "reopen")
    assert [s["id"] for s in second["sessions"]] == [session["id"]]
    assert second["status_ready"] == "Handoff: 1 ready"
    assert second["buffer_after_apply"] == APP_AFTER
