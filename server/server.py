"""The language server: the pygls ``LanguageServer`` of Handoff and its feature registration.

Nothing slow happens before ``initialize`` is answered: the session daemon is reached (or started)
and the workspace's repositories opened after ``initialized``. The sessions and their agents belong
to the daemon (agent/daemon.py): they go on when this server exits.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any
from urllib.parse import unquote

from handoff import __version__
from handoff.agent import protocol
from handoff.agent.client import RemoteError
from handoff.agent.protocol import Session, SessionError, State
from handoff.uris import normal
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.workspace import TextDocument

from . import code_actions, commands
from .apply import apply_session, check_conflicts
from .protocol import HandoffProtocol
from .repos import Repos
from .settings import Settings
from .status import Status
from .triggers import Triggers

log = logging.getLogger(__name__)
DISCOVERY_WAIT_S = 30.0
RECHECK_S = (
    1.0  # a ready session's conflicts are merged again this long after the last edit of its files
)


class HandoffServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__(
            "handoff-lsp",
            __version__,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
            protocol_cls=HandoffProtocol,
            converter_factory=commands.converter,
        )  # one converter: it takes a while to build
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: int | None = None
        self.repos = Repos(self)
        self.settings = Settings(self)
        self.status = Status(self)
        self.triggers = Triggers(self)
        self.apply_locks: dict[str, asyncio.Lock] = {}
        self._rechecks: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Future[None] | None = None  # set once close() was called

    # -- helpers used by every feature -----------------------------------------------------
    @property
    def encoding(self) -> str:
        enc = self.workspace.position_encoding or types.PositionEncodingKind.Utf16
        return str(getattr(enc, "value", enc))

    def document(self, uri: str) -> TextDocument | None:
        """The open document ``uri``, else None (pygls keys its documents by the unquoted uri,
        so ``file:///my%20dir/a.py`` is found however the client encodes it)."""
        return self.workspace.text_documents.get(unquote(uri))

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, owned by the server; failures are logged."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("background task %s failed", name, exc_info=t.exception())

        task.add_done_callback(done)
        return task

    def show(self, message: str, kind: types.MessageType = types.MessageType.Info) -> None:
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    @property
    def is_closing(self) -> bool:
        return self._closing is not None

    def ready(self, s: Session) -> None:
        """A session just became ready: apply it when ``autoApply`` is on, else show its
        conflicts with what the developer typed meanwhile, if any."""
        if self._closing is None:
            self.spawn(self._ready(s), f"ready {s.id}")

    async def _ready(self, s: Session) -> None:
        try:
            repo, _ = self.repos.find(s.id)
            cfg = await self.settings.config_for(repo.root)
        except (SessionError, RemoteError) as exc:
            log.info("session %s ready, not checked: %s", s.id, exc)
            return
        if cfg["autoApply"]:
            await self._auto_apply(s)
        else:
            await check_conflicts(self, s.id)

    def edited(self, uri: str) -> None:
        """The developer changed ``uri``: the ready sessions that change it too are merged again
        once the typing stops (:data:`RECHECK_S`), so their conflict diagnostics say what an
        apply would meet now: new ones appear, resolved ones go."""
        if self._closing is not None or self.loop is None:
            return
        ours = normal(uri)
        for s in self.repos.sessions():
            if s.state is State.READY and (ours in s.filesChanged or uri in s.filesChanged):
                pending = self._rechecks.pop(s.id, None)
                if pending is not None:
                    pending.cancel()
                self._rechecks[s.id] = self.loop.call_later(RECHECK_S, self._recheck, s.id)

    def _recheck(self, session_id: str) -> None:
        self._rechecks.pop(session_id, None)
        if self._closing is None:
            self.spawn(check_conflicts(self, session_id), f"conflicts {session_id}")

    async def _auto_apply(self, s: Session) -> None:
        try:
            result = await apply_session(self, s.id)
        except (*commands.EXPECTED, JsonRpcException, OSError) as exc:
            self.show(
                f"Handoff: “{s.title}” could not be applied automatically: {exc}",
                types.MessageType.Warning,
            )
            return
        if not result["applied"] and result["conflicts"]:
            self.show(
                f"Handoff: “{s.title}” conflicts with your edits in {result['conflicts']} "
                "place(s); see the diagnostics.",
                types.MessageType.Warning,
            )

    async def until_discovered(self) -> None:
        try:
            await asyncio.wait_for(self.repos.discovered.wait(), DISCOVERY_WAIT_S)
        except asyncio.TimeoutError:
            log.warning("workspace repositories are still loading")

    def folder_uris(self) -> list[str]:
        uris = [f.uri for f in self.workspace.folders.values()]
        root = self.workspace.root_uri
        if root and root not in uris:
            uris.append(root)
        return uris

    async def close(self) -> None:
        """Stop every running session (they become ``interrupted``); idempotent, and a second
        caller (``exit`` sent before ``shutdown`` was answered) waits for the first."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        await self.repos.close()  # the sessions go on in the daemon


def create_server() -> HandoffServer:
    ls = HandoffServer()
    commands.register(ls)
    code_actions.register(ls)
    _register_lifecycle(ls)
    return ls


def _register_lifecycle(ls: HandoffServer) -> None:
    @ls.feature(types.INITIALIZE)
    def initialize(ls: HandoffServer, params: types.InitializeParams) -> None:
        ls.loop = asyncio.get_running_loop()
        ls.loop_thread = threading.get_ident()
        ls.settings.init_options = params.initialization_options

    @ls.feature(types.INITIALIZED)
    def initialized(ls: HandoffServer, params: types.InitializedParams) -> None:
        ls.spawn(_start(ls), "startup")

    @ls.feature(types.SHUTDOWN)
    async def shutdown(ls: HandoffServer, params: None) -> None:
        # The sessions go on in the daemon; this editor leaves it. An editor that vanishes without
        # shutdown or exit is handled by the CLI (stdin EOF).
        await ls.close()

    @ls.feature(types.EXIT)
    async def exit(ls: HandoffServer, params: None) -> None:
        await ls.close()  # pygls exits right after: let a shutdown still in progress finish

    @ls.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: HandoffServer, params: types.DidOpenTextDocumentParams) -> None:
        doc = params.text_document
        ls.status.document_opened(doc.uri, doc.text)
        ls.triggers.opened(doc.uri, doc.text)

    @ls.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: HandoffServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.status.document_changed(params)
        ls.edited(params.text_document.uri)

    @ls.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: HandoffServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.status.document_closed(params.text_document.uri)

    @ls.feature(types.TEXT_DOCUMENT_DID_SAVE, types.SaveOptions(include_text=False))
    def did_save(ls: HandoffServer, params: types.DidSaveTextDocumentParams) -> None:
        uri = params.text_document.uri
        doc = ls.document(uri)
        text = params.text if params.text is not None else (doc.source if doc else None)
        ls.spawn(ls.triggers.saved(uri, text), f"save {uri}")
        ls.edited(uri)

    @ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(
        ls: HandoffServer, params: types.DidChangeConfigurationParams
    ) -> None:
        ls.spawn(ls.settings.refresh(params.settings), "configuration")

    @ls.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    def did_change_folders(
        ls: HandoffServer, params: types.DidChangeWorkspaceFoldersParams
    ) -> None:
        ls.spawn(ls.repos.discover([f.uri for f in params.event.added]), "folders")

    @ls.feature(types.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    def progress_cancel(ls: HandoffServer, params: types.WorkDoneProgressCancelParams) -> None:
        sid = ls.status.session_of_token(params.token)
        if sid is None:
            return
        repo, s = ls.repos.find(sid)
        if s.state in (State.QUEUED, State.RUNNING):
            log.info("progress cancelled: cancelling session %s", sid)
            ls.spawn(ls.repos.call(protocol.CANCEL, {"sessionId": sid}), f"cancel {sid}")


async def _start(ls: HandoffServer) -> None:
    """After ``initialized``: the editor's configuration, then the workspace's repositories and
    sessions (from the daemon) with theirs (its problems shown)."""
    await ls.settings.register_for_changes()
    ls.settings.begin_batch()  # one message for every configuration problem found at start
    try:
        await ls.settings.refresh()
        await ls.repos.discover(ls.folder_uris())  # each repository's own settings pulled with it
    except RemoteError as exc:  # no daemon could be reached: say so, once
        ls.show(f"Handoff: {exc}", types.MessageType.Error)
    finally:
        ls.settings.end_batch()
