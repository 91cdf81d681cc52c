"""The editor setup snippets of editors/README.md: the Helix TOML parses and uses the contract's
keys, the Emacs Lisp is valid, and the eglot snippet works end to end in a real Emacs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tests.support.nvim_client import APP_AFTER, handoff_lsp
from tests.support.paths import ROOT, SUPPORT

README = ROOT / "editors" / "README.md"


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
