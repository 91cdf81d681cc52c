"""An agent's modes and symbolic links come back as such: `handoff apply` as typed, and over LSP
(the text through the editor's WorkspaceEdit, the mode and the link by the server beside it);
what cannot be applied is refused with a message saying so, never reported as success."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from handoff import files
from handoff.agent.gitops import FileChange
from pygls.exceptions import JsonRpcException

from tests.support.agents import toml_agents, trust_repo, write_agent
from tests.support.cli import handoff
from tests.support.git import git
from tests.support.lsp_client import CLIENTS, Editor

MODES_AGENT = """
    os.chmod("app.py", 0o755)  # the mode only
    pathlib.Path("run.sh").write_text("#!/bin/sh\\necho hi\\n")
    os.chmod("run.sh", 0o755)  # a new executable
    os.symlink("app.py", "latest")  # a new link
    os.remove("README.md")
    os.symlink("app.py", "README.md")  # a file that becomes a link
    os.remove("docs")
    os.symlink("app.py", "docs")  # a link that points elsewhere now
    print("modes and links")
"""
ESCAPE_AGENT = """
    os.symlink("/etc/passwd", "passwd")
    os.symlink("../outside", "up")
    pathlib.Path("notes.txt").write_text("fine\\n")
    print("links out")
"""
APP = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"


def executable(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISREG(st.st_mode) and st.st_mode & 0o111 == 0o111


def with_link(repo: Path) -> None:
    os.symlink("README.md", repo / "docs")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a link")


def configure(repo: Path, tmp_path: Path, body: str) -> None:
    (repo / ".handoff.toml").write_text(
        toml_agents({"a": write_agent(tmp_path / "bin", "a", body)}, "a")
    )
    trust_repo(repo)


def check_applied(repo: Path) -> None:
    assert (repo / "app.py").read_text() == APP and executable(repo / "app.py")
    assert (repo / "run.sh").read_text() == "#!/bin/sh\necho hi\n" and executable(repo / "run.sh")
    for name in ("latest", "README.md", "docs"):
        assert os.readlink(repo / name) == "app.py", name
    # git sees exactly the agent's entries in the developer's tree
    assert git(repo, "ls-files", "-s", "--", "app.py").startswith("100644")
    raw = git(repo, "diff", "--raw", "--", "app.py", "README.md", "docs")
    assert ":100644 100755" in raw and ":100644 120000" in raw and ":120000 120000" in raw


def test_cli_apply_makes_modes_and_links(repo: Path, tmp_path: Path):
    with_link(repo)
    configure(repo, tmp_path, MODES_AGENT)
    run = handoff(repo, "run", "modes")
    assert run.returncode == 0, run.stdout + run.stderr
    sid = run.stdout.split()[0]
    out = handoff(repo, "apply", sid)
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("app.py", "run.sh", "latest", "README.md", "docs"):
        assert f"applied  {name}" in out.stdout
    check_applied(repo)


def test_cli_refuses_links_that_leave_the_repository(repo: Path, tmp_path: Path):
    configure(repo, tmp_path, ESCAPE_AGENT)
    run = handoff(repo, "run", "links out")
    sid = run.stdout.split()[0]
    out = handoff(repo, "apply", sid)
    assert out.returncode == 1
    assert "conflict passwd" in out.stdout and "'/etc/passwd', outside the repository" in out.stdout
    assert "conflict up" in out.stdout and "'../outside', outside the repository" in out.stdout
    assert not os.path.lexists(repo / "passwd") and not os.path.lexists(repo / "up")
    assert (repo / "notes.txt").read_text() == "fine\n"
    assert "ready" in handoff(repo, "ls").stdout  # not reported as applied


@pytest.mark.parametrize("caps", CLIENTS)
async def test_lsp_apply_makes_modes_and_links(caps: str, repo: Path, tmp_path: Path):
    """app.py is open: its text goes through the editor (nothing to change), its executable
    bit is set by the server; the links and the new executable are written by the server."""
    with_link(repo)
    configure(repo, tmp_path, MODES_AGENT)
    editor = await Editor.start(caps, repo)
    try:
        uri = editor.open(repo / "app.py")
        sid = (
            await editor.command(
                "handoff.delegate",
                {
                    "uri": uri,
                    "instruction": "modes",
                    "range": {
                        "start": {"line": 0, "character": 0},
                        "end": {"line": 1, "character": 0},
                    },
                },
            )
        )["sessionId"]
        await editor.wait_state(sid, "ready")
        assert await editor.command("handoff.apply", {"sessionId": sid}) == {
            "applied": True,
            "conflicts": 0,
        }
        check_applied(repo)
        assert editor.text(uri) == APP
    finally:
        await editor.stop()


async def test_lsp_refuses_a_link_over_an_open_file(repo: Path, tmp_path: Path):
    """README.md is open and the agent made it a link: the editor cannot apply that; the answer
    says so and nothing is written."""
    configure(
        repo,
        tmp_path,
        """
        os.chmod("app.py", 0o755)
        os.symlink("app.py", "latest")
        os.remove("README.md")
        os.symlink("app.py", "README.md")
        print("a link over README.md")
    """,
    )
    editor = await Editor.start("visual_studio_code", repo)
    try:
        readme = editor.open(repo / "README.md", language="markdown")
        sid = (
            await editor.command(
                "handoff.delegate",
                {
                    "uri": readme,
                    "instruction": "modes",
                    "range": {
                        "start": {"line": 0, "character": 0},
                        "end": {"line": 1, "character": 0},
                    },
                },
            )
        )["sessionId"]
        await editor.wait_state(sid, "ready")
        with pytest.raises(
            JsonRpcException, match="README.md is open in the editor and the agent made it"
        ):
            await editor.command("handoff.apply", {"sessionId": sid})
        assert files.disk_mode(repo / "README.md") == files.REGULAR
        assert not os.path.lexists(repo / "latest") and not executable(repo / "app.py")
        assert editor.session(sid)["state"] == "ready"
    finally:
        await editor.stop()


def test_files_write_keeps_and_sets_modes(tmp_path: Path):
    target = tmp_path / "x"
    files.write(target, b"one\n", files.EXECUTABLE)
    assert executable(target)
    files.write(target, b"two\n")  # no mode: kept
    assert executable(target) and target.read_bytes() == b"two\n"
    files.write(target, b"three\n", files.REGULAR)
    assert files.disk_mode(target) == files.REGULAR
    files.write(target, b"x", files.SYMLINK)  # a file replaced by a link to "x"... itself
    assert os.readlink(target) == "x"
    files.write(target, b"back\n", files.REGULAR)  # the link replaced, nothing written through it
    assert files.disk_mode(target) == files.REGULAR and target.read_bytes() == b"back\n"
    assert not any(p.name.endswith(".handoff-tmp") for p in tmp_path.iterdir())
    assert files.link_leaves("a/b", b"../../x") and files.link_leaves("a", b"/etc")
    assert not files.link_leaves("a/b", b"../c") and not files.link_leaves("a", b"b/c")


def change(status: str, old_mode: str, new_mode: str, path: str = "f") -> FileChange:
    return FileChange(path, status, old_mode=old_mode, new_mode=new_mode)  # type: ignore[arg-type]


def test_merge_keeps_the_agents_executable_bit_over_edits_made_meanwhile():
    from handoff.agent.merge import merge_change

    base, ours, theirs = b"a\nb\nc\n", b"a\nb\nc\nmine\n", b"agent\na\nb\nc\n"
    fm = merge_change(
        change("modified", files.REGULAR, files.EXECUTABLE), base, ours, theirs, files.REGULAR
    )
    assert (fm.action, fm.content, fm.mode) == (
        "write",
        b"agent\na\nb\nc\nmine\n",
        files.EXECUTABLE,
    )
    # only the mode changed: the developer's content stays, the bit is set
    fm = merge_change(
        change("modified", files.REGULAR, files.EXECUTABLE), base, ours, base, files.REGULAR
    )
    assert (fm.action, fm.content, fm.mode) == ("write", ours, files.EXECUTABLE)
    # the developer made it executable already: nothing to do
    fm = merge_change(
        change("modified", files.REGULAR, files.EXECUTABLE), base, base, base, files.EXECUTABLE
    )
    assert fm.action == "unchanged"


def test_merge_of_links_takes_the_agents_entry_or_conflicts():
    from handoff.agent.merge import merge_change

    link = files.SYMLINK
    fm = merge_change(change("modified", link, link), b"a", b"a", b"b", link)
    assert (fm.action, fm.content, fm.mode, fm.link) == ("write", b"b", link, True)
    fm = merge_change(
        change("modified", link, link), b"a", b"c", b"b", link
    )  # retargeted meanwhile
    assert fm.action == "conflict" and "symbolic link" in fm.reason
    fm = merge_change(
        change("modified", files.REGULAR, link), b"text\n", b"text\n", b"f", files.REGULAR
    )
    assert (fm.action, fm.content, fm.mode) == ("write", b"f", link)
    fm = merge_change(
        change("modified", files.REGULAR, link), b"text\n", b"edited\n", b"f", files.REGULAR
    )
    assert fm.action == "conflict"
    fm = merge_change(change("deleted", link, ""), b"a", b"a", None, link)
    assert fm.action == "delete"
    fm = merge_change(change("added", "", link), None, None, b"../../x", None)
    assert fm.action == "conflict" and "outside the repository" in fm.reason
