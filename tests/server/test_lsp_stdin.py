"""How ``handoff-lsp`` reads stdin: on the event loop from a pipe (every other LSP test), in
threads from anything else (a file, /dev/null), and messages of any size either way."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from handoff.server.cli import _PipeReader
from lsprotocol import types

from tests.support.lsp_raw import still_serving


def frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def messages(data: bytes) -> list[dict]:
    found = []
    for m in re.finditer(rb"Content-Length: (\d+)\r\n(?:Content-Type: [^\r\n]*\r\n)?\r\n", data):
        found.append(json.loads(data[m.end() : m.end() + int(m.group(1))]))
    return found


def whole_session(repo: Path) -> bytes:
    return b"".join(
        frame(m)
        for m in [
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {"processId": None, "rootUri": repo.as_uri(), "capabilities": {}},
            },
            {"jsonrpc": "2.0", "method": "initialized", "params": {}},
            {"jsonrpc": "2.0", "id": 2, "method": "shutdown"},
            {"jsonrpc": "2.0", "method": "exit"},
        ]
    )


def test_a_client_that_sends_everything_at_once(repo: Path):
    """shutdown and exit without waiting for answers, then end of input: the shutdown is still
    answered, and the server exits cleanly (no traceback of a handler cut short)."""
    proc = subprocess.run(
        [sys.executable, "-m", "handoff.server"],
        input=whole_session(repo),
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    answers = {m.get("id"): m for m in messages(proc.stdout)}
    assert answers[2]["result"] is None
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()[-3000:]


def test_stdin_is_a_regular_file(repo: Path, tmp_path: Path):
    script = tmp_path / "session.jsonrpc"
    script.write_bytes(whole_session(repo))
    with script.open("rb") as stdin:
        proc = subprocess.run(
            [sys.executable, "-m", "handoff.server"], stdin=stdin, capture_output=True, timeout=60
        )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    answers = {m.get("id"): m for m in messages(proc.stdout)}
    assert answers[1]["result"]["serverInfo"]["name"] == "handoff-lsp", proc.stdout[:500]
    assert answers[2]["result"] is None


def test_stdin_is_dev_null():
    """A character device the event loop cannot watch: read in a thread, end of input at once."""
    proc = subprocess.run(
        [sys.executable, "-m", "handoff.server"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout == b""


async def test_pipe_reader_drops_an_over_long_header_line():
    stream = asyncio.StreamReader(limit=1000)
    reader = _PipeReader(stream)
    body = b"x" * 5000  # bodies are not limited
    stream.feed_data(b"X-Junk: " + b"j" * 3500 + b"\r\n")  # longer than the limit: dropped
    stream.feed_data(b"Content-Length: 5000\r\n\r\n" + body)
    stream.feed_data(b"y" * 2500)  # an over-long line that input ends in
    stream.feed_eof()
    assert await reader.readline() == b"Content-Length: 5000\r\n"
    assert await reader.readline() == b"\r\n"
    assert await reader.readexactly(5000) == body
    assert await reader.readline() == b""
    assert await reader.readexactly(10) == b""


async def test_pipe_reader_reads_a_long_line_that_arrives_in_pieces():
    stream = asyncio.StreamReader(limit=1000)
    reader = _PipeReader(stream)

    async def feed() -> None:
        for _ in range(10):
            stream.feed_data(b"z" * 700)
            await asyncio.sleep(0)
        stream.feed_data(b"\r\nContent-Length: 2\r\n")
        stream.feed_eof()

    feeding = asyncio.create_task(feed())
    assert await asyncio.wait_for(reader.readline(), 10) == b"Content-Length: 2\r\n"
    assert len(stream._buffer) <= 2 * 1000
    await feeding


async def test_a_five_megabyte_document_over_the_pipe(editor, repo: Path):
    big = repo / "big.py"
    text = "".join(f"x_{i} = {i}  # {'padding ' * 8}\n" for i in range(60_000))
    assert len(text.encode()) > 5_000_000
    big.write_text(text)
    big_uri = editor.open(big)
    uri = editor.open(repo / "app.py")
    await still_serving(editor, uri)
    actions = await editor.code_actions(
        big_uri,
        types.Range(
            start=types.Position(line=59_999, character=0),
            end=types.Position(line=59_999, character=5),
        ),
    )
    assert any(a.title == "Delegate to background agent" for a in actions), actions
    assert editor.check_stdout() >= 3


def test_an_editor_that_does_not_read_never_stops_the_server(repo: Path, tmp_path: Path):
    """Answers pile up beyond what the pipe holds while the editor reads nothing: the server
    still handles what comes next (a delegation whose agent leaves a mark on disk)."""
    from tests.support.agents import toml_agents, trust_repo, write_agent

    mark = tmp_path / "agent-ran"
    argv = write_agent(tmp_path / "bin", "mark", f"pathlib.Path({str(mark)!r}).write_text('ran')")
    (repo / ".handoff.toml").write_text(toml_agents({"mark": argv}, "mark"))
    trust_repo(repo)
    todos = repo / "todos.py"
    todos.write_text(
        "".join(
            f"# TODO(agent): item {i} of a long list that makes big answers\n" for i in range(300)
        )
    )
    uri = todos.as_uri()
    proc = subprocess.Popen(
        [sys.executable, "-m", "handoff.server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:

        def send(message: dict) -> None:
            proc.stdin.write(frame({"jsonrpc": "2.0", **message}))
            proc.stdin.flush()

        send(
            {
                "id": 1,
                "method": "initialize",
                "params": {
                    "processId": None,
                    "rootUri": repo.as_uri(),
                    "capabilities": {},
                    "workspaceFolders": [{"uri": repo.as_uri(), "name": "repo"}],
                },
            }
        )
        head = proc.stdout.read1(65536)
        assert b'"id": 1' in head or b'"id":1' in head
        send({"method": "initialized", "params": {}})
        send(
            {
                "method": "textDocument/didOpen",
                "params": {
                    "textDocument": {
                        "uri": uri,
                        "languageId": "python",
                        "version": 1,
                        "text": todos.read_text(),
                    }
                },
            }
        )
        whole = {"start": {"line": 0, "character": 0}, "end": {"line": 300, "character": 0}}
        for i in range(80):  # ~2 KB answers: far more than a pipe holds (64 KB on Linux)
            line = {"line": i, "character": 0}
            send(
                {
                    "id": 100 + i,
                    "method": "textDocument/codeAction",
                    "params": {
                        "textDocument": {"uri": uri},
                        "range": {"start": line, "end": line},
                        "context": {"diagnostics": []},
                    },
                }
            )
        send(
            {
                "id": 99,
                "method": "workspace/executeCommand",
                "params": {
                    "command": "handoff.delegate",
                    "arguments": [{"uri": uri, "range": whole, "instruction": "mark"}],
                },
            }
        )
        deadline = time.monotonic() + 60
        while not mark.exists():
            assert time.monotonic() < deadline, "the server stopped while its answers waited"
            time.sleep(0.1)
        backlog = b""
        while b'"id": 99' not in backlog and b'"id":99' not in backlog:  # then everything arrives
            chunk = proc.stdout.read1(1 << 20)
            assert chunk, "the server's output ended early"
            backlog += chunk
        assert len(backlog) > 1 << 16  # more than the pipe held
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stdin.close()
