"""The built-in agent's tools: what they do, and everything they refuse (unit, no model)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from handoff.agent.backends.tools import TOOL_NAMES, TOOL_SCHEMAS, Workspace

from tests.support.agents import processes_with


@pytest.fixture
def ws(repo: Path) -> Workspace:
    return Workspace(repo, test_command="python -m pytest -q", command_timeout_s=10)


def outside_untouched(repo: Path, *names: str) -> None:
    for name in names:
        assert not (repo.parent / name).exists(), f"{name} was written outside the worktree"


def test_schemas_name_the_design_tools() -> None:
    names = [s["function"]["name"] for s in TOOL_SCHEMAS]
    assert names == [
        "read_file",
        "list_files",
        "search",
        "write_file",
        "edit_file",
        "run_command",
        "finish",
    ]
    assert set(names) == TOOL_NAMES
    for s in TOOL_SCHEMAS:
        assert s["type"] == "function" and s["function"]["parameters"]["type"] == "object"


def test_read_file_numbers_lines_and_slices(ws: Workspace) -> None:
    out = ws.dispatch("read_file", {"path": "app.py"})
    assert "     1\tdef add(a, b):" in out and "     6\t    return a - b" in out
    part = ws.dispatch("read_file", {"path": "app.py", "startLine": 5, "endLine": 6})
    assert part.splitlines()[:2] == ["     5\tdef sub(a, b):", "     6\t    return a - b"]
    assert "lines 5-6 of 6" in part
    assert ws.dispatch("read_file", {"path": "app.py", "startLine": 99}).startswith("error:")
    assert ws.dispatch("read_file", {"path": "missing.py"}).startswith("error:")


def test_list_files_skips_git(ws: Workspace, repo: Path) -> None:
    (repo / "pkg").mkdir()
    (repo / "pkg" / "mod.py").write_text("x = 1\n")
    out = ws.dispatch("list_files", {}).splitlines()
    assert out == [".gitignore", "README.md", "app.py", "pkg/mod.py"]
    assert ws.dispatch("list_files", {"path": "pkg"}) == "pkg/mod.py"


def test_search_reports_path_line_text(ws: Workspace) -> None:
    assert ws.dispatch("search", {"pattern": r"return a [-+] b"}).splitlines() == [
        "app.py:2:     return a + b",
        "app.py:6:     return a - b",
    ]
    assert ws.dispatch("search", {"pattern": "nothing-like-this"}) == "no matches"
    assert ws.dispatch("search", {"pattern": "("}).startswith(
        "error: search: bad regular expression"
    )
    assert "HEAD" not in ws.dispatch("search", {"pattern": "HEAD|ref:"})  # .git is not searched


def test_write_and_edit(ws: Workspace, repo: Path) -> None:
    assert ws.dispatch("write_file", {"path": "new/dir/x.txt", "content": "a\nb\n"}).startswith(
        "created"
    )
    assert (repo / "new/dir/x.txt").read_text() == "a\nb\n"
    out = ws.dispatch(
        "edit_file", {"path": "app.py", "oldText": "a - b", "newText": "a - b  # sub"}
    )
    assert out.startswith("edited app.py (line 6")
    assert (repo / "app.py").read_text().endswith("return a - b  # sub\n")


def test_edit_needs_exactly_one_occurrence(ws: Workspace, repo: Path) -> None:
    before = (repo / "app.py").read_text()
    many = ws.dispatch("edit_file", {"path": "app.py", "oldText": "return", "newText": "yield"})
    assert many.startswith("error:") and "occurs 2 times" in many
    none = ws.dispatch("edit_file", {"path": "app.py", "oldText": "nope", "newText": "x"})
    assert none.startswith("error:") and "not found" in none
    assert (repo / "app.py").read_text() == before


@pytest.mark.parametrize(
    "path",
    [
        "../outside.txt",
        "/tmp/handoff-abs.txt",
        "~/x.txt",
        "a/../../outside.txt",
        "nul\0.txt",
        "x" * 256,
        "sub/" + "y" * 300 + "/f.txt",
        ".git/config",
        "sub/.git/x",
        ".git",
        "deep/.GIT/hooks/x",
    ],
)
def test_confinement_refuses_and_writes_nothing(ws: Workspace, repo: Path, path: str) -> None:
    out = ws.dispatch("write_file", {"path": path, "content": "pwned"})
    assert out.startswith("error:"), out
    assert not Path("/tmp/handoff-abs.txt").exists()
    outside_untouched(repo, "outside.txt")
    assert ws.dispatch("read_file", {"path": path}).startswith("error:")
    assert (repo / ".git").is_dir() and not (repo / "sub").exists() and not (repo / "deep").exists()


def test_symlink_out_is_refused(ws: Workspace, repo: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret\n")
    (repo / "link.txt").symlink_to(secret)
    (repo / "linkdir").symlink_to(tmp_path)
    (repo / "dangling.txt").symlink_to(tmp_path / "not-yet.txt")
    assert ws.dispatch("read_file", {"path": "link.txt"}).startswith("error:")
    assert ws.dispatch("write_file", {"path": "link.txt", "content": "x"}).startswith("error:")
    assert ws.dispatch("write_file", {"path": "linkdir/evil.txt", "content": "x"}).startswith(
        "error:"
    )
    assert ws.dispatch("write_file", {"path": "dangling.txt", "content": "x"}).startswith("error:")
    assert ws.dispatch(
        "edit_file", {"path": "link.txt", "oldText": "secret", "newText": "x"}
    ).startswith("error:")
    assert ws.dispatch("list_files", {"path": "linkdir"}).startswith("error:")
    assert secret.read_text() == "secret\n"
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "not-yet.txt").exists()


def test_symlink_created_by_the_agent_is_refused(ws: Workspace, repo: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    out = ws.dispatch(
        "run_command", {"command": f"ln -s {target} escape && ln -s ../.git/config gitcfg"}
    )
    assert out.startswith("exit code: 0"), out
    assert ws.dispatch("write_file", {"path": "escape/x.txt", "content": "x"}).startswith("error:")
    assert ws.dispatch("read_file", {"path": "gitcfg"}).startswith("error:")
    assert list(target.iterdir()) == []


def test_symlink_inside_is_followed(ws: Workspace, repo: Path) -> None:
    (repo / "alias.py").symlink_to("app.py")
    assert "def add" in ws.dispatch("read_file", {"path": "alias.py"})


def test_devices_and_fifos_are_refused(ws: Workspace, repo: Path) -> None:
    os.mkfifo(repo / "pipe")
    (repo / "null").symlink_to("/dev/null")
    assert ws.dispatch("read_file", {"path": "pipe"}).startswith("error:")  # and does not block
    assert ws.dispatch("write_file", {"path": "pipe", "content": "x"}).startswith("error:")
    assert ws.dispatch("read_file", {"path": "null"}).startswith("error:")
    assert ws.dispatch("read_file", {"path": "."}).startswith("error:")


@pytest.mark.parametrize(
    "name, args",
    [
        ("nope", {}),
        ("read_file", {}),
        ("read_file", {"path": 3}),
        ("read_file", "app.py"),
        ("read_file", {"path": "app.py", "startLine": "1"}),
        ("read_file", {"path": "app.py", "startLine": True}),
        ("write_file", {"path": "a.txt"}),
        ("edit_file", {"path": "app.py", "oldText": "", "newText": "x"}),
        ("run_command", {"command": ["ls"]}),
        ("run_command", {"command": "  "}),
        ("finish", {}),
        ("read_file", {"path": "app.py", "startLine": 0}),
        ("write_file", {"path": "bad\ud800.txt", "content": "x"}),
        ("write_file", {"path": "ok.txt", "content": "bad \ud800"}),
        ("write_file", {"path": "app.py/x", "content": "x"}),
    ],
)
def test_bad_calls_are_error_strings(tmp_path: Path, name: str, args: object) -> None:
    (tmp_path / "app.py").write_text("x = 1\n")
    out = Workspace(tmp_path, test_command=None, command_timeout_s=5).dispatch(name, args)  # type: ignore[arg-type]
    assert isinstance(out, str) and out.startswith("error:"), out


def test_run_command_reports_exit_code_and_output(ws: Workspace, repo: Path) -> None:
    out = ws.dispatch("run_command", {"command": "echo hello; echo oops >&2; pwd; exit 3"})
    assert out.splitlines() == ["exit code: 3", "hello", "oops", str(repo.resolve())]
    assert ws.dispatch("run_command", {"command": "read x; echo got=$x"}).endswith(
        "got="
    )  # stdin closed


def test_run_command_output_is_capped(ws: Workspace) -> None:
    out = ws.dispatch(
        "run_command", {"command": "echo START; yes line | head -c 500000; echo; echo END"}
    )
    assert len(out) < 20_000
    assert "START" in out and out.endswith("END") and "bytes omitted" in out


# Inside the sandbox `$!` is a pid of the sandbox's own pid namespace: processes are found
# by a unique argument instead (`sleep 100.<n>`), in the whole system's /proc.
@pytest.mark.parametrize("policy", ["sandbox", "allow"])
def test_run_command_timeout_kills_the_process_group(repo: Path, policy: str) -> None:
    ws = Workspace(repo, test_command=None, command_timeout_s=1, policy=policy)
    mark = f"100.{os.getpid()}{time.monotonic_ns() % 10**6}"
    started = time.monotonic()
    out = ws.dispatch("run_command", {"command": f"sleep {mark} & sleep {mark}"})
    assert time.monotonic() - started < 10
    assert out.startswith("timed out after 1 s")
    assert not _running(mark)


@pytest.mark.parametrize("policy", ["sandbox", "allow"])
def test_run_command_leaves_no_background_process(repo: Path, policy: str) -> None:
    ws = Workspace(repo, test_command=None, command_timeout_s=10, policy=policy)
    mark = f"100.{os.getpid()}{time.monotonic_ns() % 10**6}"
    out = ws.dispatch(
        "run_command", {"command": f"(sleep {mark} >/dev/null 2>&1 &) ; sleep {mark} &"}
    )
    assert out.startswith("exit code: 0")
    assert not _running(mark)


def test_run_command_environment_is_scrubbed(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-secret")
    monkeypatch.setenv("HANDOFF_API_KEY", "sk-handoff")
    out = ws.dispatch("run_command", {"command": 'echo "[$OPENAI_API_KEY]"; env'})
    assert "[]" in out
    assert "secret" not in out and "sk-handoff" not in out
    names = {line.split("=", 1)[0] for line in out.splitlines()[2:] if "=" in line}
    assert names <= {"PATH", "HOME", "TMPDIR", "LANG", "TERM", "PWD", "SHLVL", "_", "OLDPWD"}
    home = [line for line in out.splitlines() if line.startswith("HOME=")][0][5:]
    assert home != os.environ["HOME"] and not Path(home).exists()  # a temporary HOME, removed


def _running(mark: str) -> list[int]:
    """Live (not zombie) processes with ``mark`` among their arguments, after a moment."""
    found: list[int] = []
    for _ in range(50):
        found = processes_with(mark)
        if not found:
            return []
        time.sleep(0.05)
    return found
