"""A test editor around pytest-lsp's client: documents, an applier, waiting on notifications.

:class:`Editor` starts ``handoff-lsp`` over stdio as a real process, initializes it with a real
client capability set (``visual_studio_code`` or ``neovim``), keeps its own copy of the open
documents, applies ``workspace/applyEdit`` requests to them (or to the disk for closed files) the
way an editor does, and records every notification so tests can wait on them. Every byte the
server writes to stdout is recorded and can be checked to be nothing but JSON-RPC messages.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

import pytest_lsp
from handoff.server.edits import apply_text_edits, text_edits
from lsprotocol import types
from pygls.io_ import run_async
from pygls.protocol import default_converter
from pytest_lsp.client import (
    DEFAULT_CLIENT_FEATURES,
    LanguageClient,
    forward_stderr,
    register_lsp_features,
)

CLIENTS = ["visual_studio_code", "neovim"]
TIMEOUT = 60.0


class RecordingReader:
    """Reads the server's stdout for pygls and keeps a copy of every byte."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.stream = stream
        self.data = bytearray()

    async def readline(self) -> bytes:
        line = await self.stream.readline()
        self.data += line
        return line

    async def readexactly(self, n: int) -> bytes:
        try:
            body = await self.stream.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            body = exc.partial
        self.data += body
        return body


def check_stream(data: bytes) -> int:
    """Assert ``data`` is a sequence of well-formed JSON-RPC messages; returns how many."""
    pos, count = 0, 0
    header = re.compile(rb"Content-Length: (\d+)\r\n(?:Content-Type: [^\r\n]*\r\n)?\r\n")
    while pos < len(data):
        m = header.match(data, pos)
        assert m, f"stray bytes on the server's stdout at {pos}: {bytes(data[pos : pos + 120])!r}"
        end = m.end() + int(m.group(1))
        message = json.loads(data[m.end() : end])
        assert message.get("jsonrpc") == "2.0", message
        pos, count = end, count + 1
    return count


class Client(LanguageClient):
    async def start_io(self, cmd: str, *args, **kwargs):  # pygls' start_io, with a recording reader
        server = await asyncio.create_subprocess_exec(
            cmd,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            **kwargs,
        )
        self.protocol.set_writer(server.stdin)
        self.reader = RecordingReader(server.stdout)
        connection = asyncio.create_task(
            run_async(
                stop_event=self._stop_event,
                reader=self.reader,
                protocol=self.protocol,
                error_handler=self.report_server_error,
            )
        )
        self._server = server
        self._async_tasks.extend([connection, asyncio.create_task(self._server_exit())])
        self._stderr_forwarder = asyncio.create_task(forward_stderr(server))


class Doc:
    def __init__(self, uri: str, text: str, version: int) -> None:
        self.uri, self.text, self.version = uri, text, version


class Editor:
    def __init__(self, client: Client, caps: str, root: Path) -> None:
        self.client = client
        self.caps = caps
        self.root = root
        self.docs: dict[str, Doc] = {}
        self.lists: list[list[dict[str, Any]]] = []  # every handoff/sessions notification
        self.diagnostics: dict[str, list[types.Diagnostic]] = {}
        self.edits: list[types.WorkspaceEdit] = []
        self.on_apply: Callable[[types.WorkspaceEdit], bool | None] | None = None
        self.message_requests: list[types.ShowMessageRequestParams] = []
        # the title of the action to pick in a window/showMessageRequest (None: dismiss it)
        self.choose: Callable[[types.ShowMessageRequestParams], str | None] | None = None
        self.encoding = "utf-16"
        self._event = asyncio.Event()

    # -- start / stop --------------------------------------------------------------------------
    @classmethod
    async def start(
        cls,
        caps: str | types.ClientCapabilities,
        root: Path,
        *,
        env: dict[str, str] | None = None,
        init_options: Any = None,
        folders: list[Path] | None = None,
        configuration: dict[str, Any] | None = None,
        args: list[str] | None = None,
        experimental: Any = None,
    ) -> Editor:
        client = Client(converter_factory=default_converter)
        editor = cls(client, caps, root)
        editor._register()
        if configuration is not None:
            client.set_configuration(configuration)
        await client.start_io(
            sys.executable, "-m", "handoff.server", *(args or []), env={**os.environ, **(env or {})}
        )
        folders = folders if folders is not None else [root]
        capabilities = (
            caps
            if isinstance(caps, types.ClientCapabilities)
            else pytest_lsp.client_capabilities(caps)
        )
        if (
            experimental is not None
        ):  # e.g. {"handoff": {"prompt": True}}, as Handoff's own clients say
            capabilities.experimental = experimental
        result = await client.initialize_session(
            types.InitializeParams(
                capabilities=capabilities,
                root_uri=folders[0].as_uri() if folders else None,
                workspace_folders=[
                    types.WorkspaceFolder(uri=f.as_uri(), name=f.name) for f in folders
                ],
                initialization_options=init_options,
            )
        )
        enc = result.capabilities.position_encoding or "utf-16"
        editor.encoding = str(getattr(enc, "value", enc))
        return editor

    async def stop(self) -> None:
        if self.client._server is not None and self.client._server.returncode is None:
            await asyncio.wait_for(self.client.shutdown_session(), 30)
        await self.client.stop()

    def check_stdout(self) -> int:
        return check_stream(bytes(self.client.reader.data))

    # -- handlers ----------------------------------------------------------------------------
    def _pulse(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def _register(self) -> None:
        client, editor = self.client, self
        mine = {
            types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS,
            types.PROGRESS,
            types.WINDOW_SHOW_MESSAGE,
            types.WINDOW_SHOW_DOCUMENT,
            types.WINDOW_WORK_DONE_PROGRESS_CREATE,
        }
        register_lsp_features(
            client, {k: v for k, v in DEFAULT_CLIENT_FEATURES.items() if k not in mine}
        )
        conv = client.protocol._converter

        def code_action_hook(obj: Any, _: type) -> Any:  # lsprotocol reads any "command" as Command
            if isinstance(obj.get("command"), str):
                return conv.structure(obj, types.Command)
            return conv.structure(obj, types.CodeAction)

        # a runtime key, spelled as lsprotocol's annotations are (typing.Union), not a type hint
        conv.register_structure_hook(Union[types.Command, types.CodeAction], code_action_hook)  # noqa: UP007

        def wrap(method: str, record: Callable[..., Any] | None = None):
            default = DEFAULT_CLIENT_FEATURES.get(method)

            def handler(client: LanguageClient, params: Any):
                result = default(client, params) if default else None
                if record:
                    record(params)
                editor._pulse()
                return result

            client.feature(method)(handler)

        wrap(
            types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS,
            lambda p: editor.diagnostics.__setitem__(p.uri, list(p.diagnostics)),
        )
        for method in (
            types.PROGRESS,
            types.WINDOW_SHOW_MESSAGE,
            types.WINDOW_SHOW_DOCUMENT,
            types.WINDOW_WORK_DONE_PROGRESS_CREATE,
        ):
            wrap(method)

        def sessions(client: LanguageClient, params: Any):
            items = params.sessions if hasattr(params, "sessions") else params["sessions"]
            editor.lists.append([_plain(s) for s in items])
            editor._pulse()

        if not isinstance(self.caps, types.ClientCapabilities):  # a bare (Helix-like) client
            client.feature("handoff/sessions")(sessions)  # has no custom notification handlers

        @client.feature(types.WINDOW_SHOW_MESSAGE_REQUEST)
        def message_request(client: LanguageClient, params: types.ShowMessageRequestParams):
            editor.message_requests.append(params)
            editor._pulse()
            chosen = editor.choose(params) if editor.choose is not None else None
            return next((a for a in params.actions or [] if a.title == chosen), None)

        @client.feature(types.CLIENT_REGISTER_CAPABILITY)
        def register_capability(client: LanguageClient, params: types.RegistrationParams):
            return None

        @client.feature(types.WORKSPACE_APPLY_EDIT)
        def apply_edit(client: LanguageClient, params: types.ApplyWorkspaceEditParams):
            editor.edits.append(params.edit)
            if editor.on_apply is not None and editor.on_apply(params.edit) is False:
                return types.ApplyWorkspaceEditResult(
                    applied=False, failure_reason="refused by test"
                )
            ok, reason = editor._apply(params.edit)
            editor._pulse()
            return types.ApplyWorkspaceEditResult(applied=ok, failure_reason=reason)

    # -- the applier -------------------------------------------------------------------------
    def _apply(self, edit: types.WorkspaceEdit) -> tuple[bool, str | None]:
        for change in edit.document_changes or []:
            if (
                isinstance(change, types.TextDocumentEdit)
                and change.text_document.version is not None
            ):
                doc = self.docs.get(change.text_document.uri)
                if doc is None or doc.version != change.text_document.version:
                    return False, f"version mismatch for {change.text_document.uri}"
        for uri, edits in (edit.changes or {}).items():
            self._edit(uri, edits)
        for change in edit.document_changes or []:
            if isinstance(change, types.CreateFile):
                path = _path(change.uri)
                assert not path.exists(), f"CreateFile on an existing file {path}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("")
            elif isinstance(change, types.DeleteFile):
                _path(change.uri).unlink()
                self.docs.pop(change.uri, None)
            elif isinstance(change, types.RenameFile):
                old, new = _path(change.old_uri), _path(change.new_uri)
                new.parent.mkdir(parents=True, exist_ok=True)
                old.rename(new)
                if change.old_uri in self.docs:
                    text = self.close(change.old_uri)
                    new.write_text(text)
                    self.open(new, text)
            else:
                self._edit(change.text_document.uri, change.edits)
        return True, None

    def _edit(self, uri: str, edits: list[types.TextEdit]) -> None:
        doc = self.docs.get(uri)
        if doc is None:  # a closed file: the editor writes it
            path = _path(uri)
            path.write_text(apply_text_edits(path.read_text(), edits, self.encoding))
            return
        doc.text = apply_text_edits(doc.text, edits, self.encoding)
        doc.version += 1
        ordered = sorted(
            edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True
        )
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=doc.version),
                content_changes=[
                    types.TextDocumentContentChangePartial(range=e.range, text=e.new_text)
                    for e in ordered
                ],
            )
        )

    # -- documents ---------------------------------------------------------------------------
    def open(self, path: Path, text: str | None = None, language: str = "python") -> str:
        uri = path.as_uri()
        text = path.read_text() if text is None else text
        self.docs[uri] = Doc(uri, text, 1)
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id=language, version=1, text=text
                )
            )
        )
        return uri

    def close(self, uri: str) -> str:
        doc = self.docs.pop(uri)
        self.client.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )
        return doc.text

    def type(self, uri: str, new_text: str) -> None:
        """The developer edits the buffer to ``new_text`` (sent as incremental changes)."""
        doc = self.docs[uri]
        edits = text_edits(doc.text, new_text, self.encoding)
        doc.text, doc.version = new_text, doc.version + 1
        ordered = sorted(
            edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True
        )
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=doc.version),
                content_changes=[
                    types.TextDocumentContentChangePartial(range=e.range, text=e.new_text)
                    for e in ordered
                ],
            )
        )

    def save(self, uri: str) -> None:
        _path(uri).write_text(self.docs[uri].text)
        self.client.text_document_did_save(
            types.DidSaveTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )

    def text(self, uri: str) -> str:
        return self.docs[uri].text

    # -- requests ----------------------------------------------------------------------------
    async def code_actions(
        self, uri: str, rng: types.Range, diagnostics: list[types.Diagnostic] | None = None
    ) -> list[types.CodeAction]:
        result = await self.client.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                range=rng,
                context=types.CodeActionContext(diagnostics=diagnostics or []),
            )
        )
        return [a for a in result or [] if isinstance(a, types.CodeAction)]

    async def command(self, name: str, arg: dict[str, Any]) -> Any:
        result = await self.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=name, arguments=[arg])
        )
        return _plain(result)

    async def run(self, action: types.CodeAction) -> Any:
        assert action.command is not None, action
        return await self.command(action.command.command, action.command.arguments[0])

    # -- waiting -----------------------------------------------------------------------------
    async def wait_for(
        self, predicate: Callable[[], Any], what: str = "", timeout: float = TIMEOUT
    ) -> Any:
        """Until ``predicate()`` is true; re-checked after every message from the server."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out waiting for {what or predicate}; "
                    f"last sessions: {self.lists[-1:] or None}"
                )
            try:
                await asyncio.wait_for(self._event.wait(), min(remaining, 0.05))
            except asyncio.TimeoutError:
                pass  # re-check: a file the test waits on may have appeared

    def session(self, sid: str) -> dict[str, Any] | None:
        for items in reversed(self.lists):
            for s in items:
                if s["id"] == sid:
                    return s
        return None

    def states(self, sid: str) -> list[str]:
        """Every state ``sid`` had in the notifications, without repeats."""
        seen: list[str] = []
        for items in self.lists:
            for s in items:
                if s["id"] == sid and (not seen or seen[-1] != s["state"]):
                    seen.append(s["state"])
        return seen

    async def wait_state(self, sid: str, *states: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        return await self.wait_for(
            lambda: (s := self.session(sid)) is not None and s["state"] in states and s,
            f"session {sid} to be {'/'.join(states)}",
            timeout,
        )

    def handoff_diagnostics(self, uri: str) -> list[types.Diagnostic]:
        return [d for d in self.diagnostics.get(uri, []) if d.source == "handoff"]

    async def wait_diagnostic(
        self, uri: str, predicate: Callable[[types.Diagnostic], bool], what: str = "a diagnostic"
    ) -> types.Diagnostic:
        return await self.wait_for(
            lambda: next((d for d in self.handoff_diagnostics(uri) if predicate(d)), None), what
        )

    def messages(self, kind: types.MessageType | None = None) -> list[str]:
        return [m.message for m in self.client.messages if kind is None or m.type == kind]


def _path(uri: str) -> Path:
    from pygls.uris import to_fs_path

    return Path(to_fs_path(uri))


def _plain(obj: Any) -> Any:
    """Results and notification params as plain JSON values (pygls gives named tuples)."""
    if hasattr(obj, "_asdict"):
        return {k: _plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
