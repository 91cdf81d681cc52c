"""The benchmarks' editor: pygls' ``LanguageClient`` driving a server process over stdio.

It answers what the server asks (configuration, progress creation, capability registration,
``workspace/applyEdit``: accepted, with the time it arrived), keeps the last ``handoff/sessions``
list, and times requests. Custom notifications keep their plain JSON params (pygls would turn every
object into a freshly made namedtuple class, which costs the client milliseconds per message and
would be counted as server latency). The server's stderr goes to a file, never to an unread pipe.

Also here: :func:`raw_initialize`, a byte-level client for start-up timing (no pygls in the way).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.io_ import run_async
from pygls.lsp.client import LanguageClient
from pygls.protocol import LanguageServerProtocol, default_converter
from pygls.protocol.json_rpc import JsonRPCNotification, JsonRPCResponseMessage

CLIENT_CAPS = "visual_studio_code"  # a real client's capability set (pytest-lsp ships them)
_RAW_NOTIFICATIONS = {"handoff/sessions"}


def capabilities(name: str = CLIENT_CAPS) -> types.ClientCapabilities:
    import pytest_lsp

    return pytest_lsp.client_capabilities(name)


class _Protocol(LanguageServerProtocol):
    """Handoff's own JSON (``handoff/sessions``, ``workspace/executeCommand`` results) is kept as
    parsed, as an editor's ``JSON.parse`` keeps it: pygls would turn every object in it into a
    freshly made namedtuple class (~50 us each), a client-side cost the latency benchmark would
    otherwise count as the server's, growing with the number of sessions listed."""

    def structure_message(self, data: dict[str, Any]):
        if "id" not in data and data.get("method") in _RAW_NOTIFICATIONS:
            return JsonRPCNotification(
                method=data["method"], jsonrpc=data["jsonrpc"], params=data.get("params")
            )
        if (
            "id" in data
            and "method" not in data
            and "error" not in data
            and "jsonrpc" in data
            and self._result_types.get(data["id"]) in (None, types.ExecuteCommandResponse)
        ):
            self._result_types.pop(data["id"], None)
            return JsonRPCResponseMessage(
                id=data["id"], jsonrpc=data["jsonrpc"], result=data.get("result")
            )
        return super().structure_message(data)


class BenchClient(LanguageClient):
    def __init__(self) -> None:
        super().__init__(
            "handoff-bench", "1", protocol_cls=_Protocol, converter_factory=default_converter
        )
        self.sessions: list[dict[str, Any]] = []
        self.session_lists = 0
        self.notifications: dict[str, int] = {}
        self.apply_edits: list[tuple[float, types.WorkspaceEdit]] = []  # (perf_counter, edit)
        self.messages: list[str] = []
        # (perf_counter when received, sessions) of every handoff/sessions list, once set to a list
        self.list_log: list[tuple[float, list[dict[str, Any]]]] | None = None
        self.changed = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self._stderr = None
        self._register()

    # -- process ---------------------------------------------------------------------------
    async def start(
        self, argv: list[str], *, env: dict[str, str], stderr_path: Path, cwd: Path | None = None
    ) -> None:
        stderr_path.parent.mkdir(parents=True, exist_ok=True)
        self._stderr = open(stderr_path, "ab")
        server = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=cwd,
        )
        self.protocol.set_writer(server.stdin)
        connection = asyncio.create_task(
            run_async(
                stop_event=self._stop_event,
                reader=server.stdout,
                protocol=self.protocol,
                error_handler=self.report_server_error,
            )
        )
        self._server = self.proc = server
        self._async_tasks.extend([connection, asyncio.create_task(self._server_exit())])
        self._spy = None
        if (
            os.environ.get("BENCH_PROFILE") == "all"
        ):  # diagnosis: py-spy over the server's whole life
            spy = Path(sys.executable).parent / "py-spy"
            self._spy = subprocess.Popen(
                [
                    str(spy),
                    "record",
                    "--pid",
                    str(server.pid),
                    "--format",
                    "raw",
                    "--idle",
                    "--threads",
                    "--nonblocking",
                    "--rate",
                    "200",
                    "-o",
                    str(stderr_path.with_suffix(".folded")),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    async def initialize(self, root: Path, init_options: Any = None) -> types.InitializeResult:
        result = await self.initialize_async(
            types.InitializeParams(
                capabilities=capabilities(),
                process_id=os.getpid(),
                root_uri=root.as_uri(),
                workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name=root.name)],
                initialization_options=init_options,
                client_info=types.ClientInfo(name="handoff-bench"),
            )
        )
        self.initialized(types.InitializedParams())
        return result

    async def close(self, timeout: float = 60.0) -> None:
        try:
            if self.proc is not None and self.proc.returncode is None:
                await asyncio.wait_for(self.shutdown_async(None), timeout)
                self.exit(None)
                await asyncio.wait_for(self.proc.wait(), timeout)
        except (asyncio.TimeoutError, RuntimeError, ConnectionError):
            if self.proc is not None and self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        finally:
            await self.stop()
            if self._stderr is not None:
                self._stderr.close()
            if getattr(self, "_spy", None) is not None:
                try:
                    self._spy.wait(30)
                except subprocess.TimeoutExpired:
                    self._spy.kill()

    # -- what the server asks and says ------------------------------------------------------
    def _count(self, method: str) -> None:
        self.notifications[method] = self.notifications.get(method, 0) + 1

    def _register(self) -> None:
        client = self

        @self.feature(types.WORKSPACE_CONFIGURATION)
        def configuration(ls, params: types.ConfigurationParams):
            return [None for _ in params.items]

        @self.feature(types.CLIENT_REGISTER_CAPABILITY)
        def register(ls, params):
            return None

        @self.feature(types.CLIENT_UNREGISTER_CAPABILITY)
        def unregister(ls, params):
            return None

        @self.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def progress_create(ls, params):
            client._count(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
            return None

        @self.feature(types.WORKSPACE_APPLY_EDIT)
        def apply_edit(ls, params: types.ApplyWorkspaceEditParams):
            client.apply_edits.append((time.perf_counter(), params.edit))
            return types.ApplyWorkspaceEditResult(applied=True)

        @self.feature(types.WINDOW_SHOW_DOCUMENT)
        def show_document(ls, params):
            return types.ShowDocumentResult(success=True)

        @self.feature(types.WINDOW_SHOW_MESSAGE)
        def show_message(ls, params: types.ShowMessageParams):
            client._count(types.WINDOW_SHOW_MESSAGE)
            client.messages.append(params.message)

        for method in (
            types.PROGRESS,
            types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS,
            types.WINDOW_LOG_MESSAGE,
        ):
            self.feature(method)(lambda ls, params, m=method: client._count(m))

        @self.feature("handoff/sessions")
        def sessions(ls, params):
            if client.list_log is not None:
                client.list_log.append((time.perf_counter(), params["sessions"]))
            client.sessions = params["sessions"]
            client.session_lists += 1
            client.changed.set()
            client.changed = asyncio.Event()

    # -- requests ----------------------------------------------------------------------------
    async def command(self, name: str, arg: dict[str, Any] | None = None) -> Any:
        result = await self.workspace_execute_command_async(
            types.ExecuteCommandParams(command=name, arguments=[arg or {}])
        )
        return result  # kept as parsed by _Protocol: plain JSON already

    async def list_sessions(self) -> list[dict[str, Any]]:
        return (await self.command("handoff.listSessions"))["sessions"]

    async def code_action(self, uri: str, rng: types.Range) -> Any:
        return await self.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                range=rng,
                context=types.CodeActionContext(
                    diagnostics=[], trigger_kind=types.CodeActionTriggerKind.Invoked
                ),
            )
        )

    def open(self, path: Path, text: str | None = None) -> str:
        uri = path.as_uri()
        self.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri,
                    language_id="python",
                    version=1,
                    text=path.read_text() if text is None else text,
                )
            )
        )
        return uri

    async def wait_sessions(self, predicate, timeout: float, what: str) -> list[dict[str, Any]]:
        """Until ``predicate(sessions)`` holds for the latest ``handoff/sessions`` list."""
        deadline = time.monotonic() + timeout
        while not predicate(self.sessions):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                states = {}
                for s in self.sessions:
                    states[s["state"]] = states.get(s["state"], 0) + 1
                raise TimeoutError(
                    f"timed out after {timeout:g} s waiting for {what}; states: {states}"
                )
            try:
                await asyncio.wait_for(self.changed.wait(), min(remaining, 1.0))
            except asyncio.TimeoutError:
                pass
        return self.sessions


def count_states(sessions: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in sessions:
        out[s["state"]] = out.get(s["state"], 0) + 1
    return out


def handoff_argv() -> list[str]:
    """How the benchmarks start the server: the venv's ``handoff-lsp``."""
    from .common import VENV_BIN

    return [str(VENV_BIN / "handoff-lsp")]


# -- raw start-up client ---------------------------------------------------------------------


def _frame(obj: dict[str, Any]) -> bytes:
    body = json.dumps(obj).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class _Reader:
    """JSON-RPC messages from a pipe, with its own buffer (so ``select`` sees what is pending)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def complete(self) -> bool:
        head, sep, _ = self.buf.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = int(re.search(rb"Content-Length: *(\d+)", head, re.I).group(1))
        return len(self.buf) >= len(head) + 4 + length

    def read(self) -> dict[str, Any]:
        while not self.complete():
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                raise EOFError("the server closed its stdout")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: *(\d+)", head, re.I).group(1))
        body, self.buf = rest[:length], rest[length:]
        return json.loads(body)


def initialize_params(root: Path) -> dict[str, Any]:
    params = types.InitializeParams(
        capabilities=capabilities(),
        process_id=os.getpid(),
        root_uri=root.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name=root.name)],
        client_info=types.ClientInfo(name="handoff-bench"),
    )
    return default_converter().unstructure(params)


def raw_initialize(
    argv: list[str],
    *,
    env: dict[str, str],
    params: dict[str, Any],
    stderr_path: Path,
    linger_s: float = 0.0,
    on_answer=None,
) -> float:
    """Seconds from process start to the ``initialize`` answer. ``on_answer()`` runs right after the
    answer arrives; with ``linger_s`` the client then sends ``initialized`` and answers the server's
    requests for that long before shutting it down."""
    with open(stderr_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env
        )
        try:
            proc.stdin.write(
                _frame({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params})
            )
            proc.stdin.flush()
            reader = _Reader(proc.stdout.fileno())
            while True:
                msg = reader.read()
                if msg.get("id") == 1 and "method" not in msg:
                    break
                if "id" in msg and "method" in msg:  # a request before our answer: answer null
                    proc.stdin.write(_frame({"jsonrpc": "2.0", "id": msg["id"], "result": None}))
                    proc.stdin.flush()
            elapsed = time.perf_counter() - t0
            if "error" in msg:
                raise RuntimeError(f"{argv[0]}: initialize failed: {msg['error']}")
            if on_answer is not None:
                on_answer()
            if linger_s:
                _linger(proc, reader, linger_s)
            proc.stdin.write(_frame({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}))
            proc.stdin.write(_frame({"jsonrpc": "2.0", "method": "exit"}))
            proc.stdin.flush()
            proc.stdin.close()
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return elapsed


def _linger(proc: subprocess.Popen, reader: _Reader, seconds: float) -> None:
    """Send ``initialized`` and answer the server's requests (configuration etc.) for a while."""
    import selectors

    proc.stdin.write(_frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
    proc.stdin.flush()
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if not reader.complete() and not sel.select(left):
            break
        if not reader.complete():
            chunk = os.read(reader.fd, 1 << 16)
            if not chunk:
                break
            reader.buf += chunk
            continue
        msg = reader.read()
        if "id" in msg and "method" in msg:
            result = None
            if msg["method"] == "workspace/configuration":
                result = [None for _ in msg["params"]["items"]]
            proc.stdin.write(_frame({"jsonrpc": "2.0", "id": msg["id"], "result": result}))
            proc.stdin.flush()
    sel.close()
