"""``handoff-lsp`` as a program: version, lazy imports, a stdout only JSON-RPC uses, TCP."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from handoff import __version__
from lsprotocol import types
from pygls.protocol import default_converter

from tests.support.lsp_client import Client, Editor


def test_version():
    out = subprocess.run(
        [sys.executable, "-m", "handoff.server", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == f"handoff-lsp {__version__}"


def test_help_reads_as_plain_text():
    out = subprocess.run(
        [sys.executable, "-m", "handoff.server", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "language server" in out and "--log-file" in out
    assert "`" not in out  # no reStructuredText markup from a docstring


def test_no_litellm_and_no_builtin_agent_at_import():
    code = (
        "import sys, handoff.server.cli, handoff.server.server as s; s.create_server(); "
        "bad = [m for m in sys.modules if m == 'litellm' or m.endswith('backends.builtin')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_stray_output_never_reaches_the_protocol_stream(repo: Path, tmp_path: Path):
    """A library that prints, and a write straight to file descriptor 1, once the server runs."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        textwrap.dedent("""
        import os, sys, threading, time
        def noise():
            while sys.stdout is not sys.stderr:
                time.sleep(0.005)
            for i in range(20):
                print("a stray print", i)
                os.write(1, b"a stray write to fd 1\\n")
                time.sleep(0.01)
            open(os.path.join(os.path.dirname(__file__), "noise-done"), "w").close()
        threading.Thread(target=noise, daemon=True).start()
    """)
    )
    log = tmp_path / "server.log"
    editor = await Editor.start(
        "neovim",
        repo,
        env={"PYTHONPATH": str(site)},
        args=["--log-file", str(log), "--clientProcessId=1"],
    )
    try:
        await editor.command("handoff.listSessions", {})
        uri = editor.open(repo / "app.py")
        await editor.code_actions(
            uri,
            types.Range(
                start=types.Position(line=0, character=0), end=types.Position(line=1, character=0)
            ),
        )
        await editor.wait_for(lambda: (site / "noise-done").exists(), "the noise to be made")
        await editor.command("handoff.listSessions", {})
    finally:
        await editor.stop()
    assert editor.client.error is None
    assert editor.check_stdout() >= 4
    assert f"handoff-lsp {__version__} on stdio" in log.read_text()


async def test_tcp(repo: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "handoff.server", "--tcp", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    client = Client(converter_factory=default_converter)
    try:
        for _ in range(200):  # until it listens
            try:
                await client.start_tcp("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.05)
        result = await client.initialize_session(
            types.InitializeParams(capabilities=types.ClientCapabilities(), root_uri=repo.as_uri())
        )
        assert result.server_info.name == "handoff-lsp"
        assert "handoff.delegate" in result.capabilities.execute_command_provider.commands
        await client.shutdown_session()
        assert proc.wait(30) == 0
        await client.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with proc:  # closes its pipes
        assert proc.stdout.read() == b""
