"""pygls' ``LanguageServerProtocol``, made to answer every request and survive a confused client.

- A request whose params do not fit the LSP types (a negative line, a position past 2^31, a
  missing field, ``null`` params) is dropped by pygls after a log line: the client would wait for
  ever. Here it gets an ``InvalidParams`` error that names the bad fields (wire names).
- A request after ``shutdown`` gets an ``InvalidRequest`` error (pygls ignores it).
- An answer of the client that cannot be read fails the server's request that waits for it
  (pygls would leave it waiting for ever).
- A notification that cannot be read, or a ``didChange`` for a document that was never opened,
  is skipped with a warning in the log (``window/logMessage``), not an "Error in server" pop-up.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import cattrs
from handoff.text import clip
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcInvalidRequest
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.json_rpc import RPCRequest
from pygls.protocol.language_server import lsp_method

from . import edits

if TYPE_CHECKING:
    from handoff.agent.protocol import Session

log = logging.getLogger(__name__)
MAX_PROBLEMS = 5


def camel_path(text: str) -> str:
    """``params.text_document`` -> ``params.textDocument`` in a cattrs error path."""
    return re.sub(
        r"(?<=\.)[a-z]+(?:_[a-z0-9]+)+",
        lambda m: re.sub(r"_([a-z0-9])", lambda c: c.group(1).upper(), m.group(0)),
        text,
    )


def problems(exc: BaseException, path: str) -> str:
    """What cattrs found wrong, in a few readable lines (never the values themselves)."""
    if not isinstance(exc, cattrs.BaseValidationError):
        return type(exc).__name__
    prefix = f"@ {path}." if path else "@ "
    found = [camel_path(p.replace("@ $.", prefix)) for p in cattrs.transform_error(exc, path="$")]
    more = f"; and {len(found) - MAX_PROBLEMS} more" if len(found) > MAX_PROBLEMS else ""
    return "; ".join(found[:MAX_PROBLEMS]) + more


class _Unreadable:
    """A message whose params could not be read; answered (or skipped) by ``handle_message``."""

    jsonrpc = "2.0"

    def __init__(self, msg_id: Any, method: str, problem: str) -> None:
        self.id, self.method, self.problem = msg_id, method, problem


_PLAIN = (dict, list)


class RawJSON(str):
    """JSON text, already written (by ``json.dumps``); as a result or params it is sent as it
    is, not parsed or encoded again."""


def session_list(sessions: Iterable[Session]) -> RawJSON:
    """``{"sessions": [Session]}`` (``handoff.listSessions``, ``handoff/sessions``) from each
    session's JSON, which is kept between changes: under load, encoding the whole list again
    for every answer took the event loop ~0.2 ms per 16 sessions."""
    return RawJSON('{"sessions": [' + ", ".join(s.to_json() for s in sessions) + "]}")


def _envelope(message: Any) -> dict[str, Any]:
    """A message's ``jsonrpc``, ``id`` and ``method``, as the wire has them."""
    out: dict[str, Any] = {"jsonrpc": message.jsonrpc}
    if getattr(message, "id", None) is not None:
        out["id"] = message.id
    if isinstance(getattr(message, "method", None), str):
        out["method"] = message.method
    return out


async def _awaited(result: Awaitable[Any]) -> Any:
    return await result


class HandoffProtocol(LanguageServerProtocol):
    def _serialize_message(self, data: Any) -> Any:
        """What ``json.dumps`` cannot write itself. A response or notification whose result or
        params is plain JSON (Handoff's commands and ``handoff/sessions``) is written as it is,
        not walked value by value by cattrs first (a session list: ~1 ms of the event loop); an
        LSP object inside comes back here and goes through cattrs as before."""
        if getattr(data, "jsonrpc", None) is not None and getattr(data, "error", None) is None:
            for name in ("result", "params"):
                value = getattr(data, name, None)
                if isinstance(value, _PLAIN):
                    return {**_envelope(data), name: value}
        return super()._serialize_message(data)

    def _send_data(self, data: Any) -> None:
        """pygls' ``_send_data``, except for a result or params that is :class:`RawJSON`: the
        message is put together around that text."""
        name = None
        if getattr(data, "error", None) is None:
            name = next(
                (n for n in ("result", "params") if isinstance(getattr(data, n, None), RawJSON)),
                None,
            )
        if name is None or self.writer is None:
            return super()._send_data(data)
        body = f'{json.dumps(_envelope(data))[:-1]}, "{name}": {getattr(data, name)}}}'.encode(
            self.CHARSET
        )
        if self._include_headers:
            body = (
                f"Content-Length: {len(body)}\r\n"
                f"Content-Type: {self.CONTENT_TYPE}; charset={self.CHARSET}\r\n\r\n"
            ).encode() + body
        written = self.writer.write(body)
        if inspect.isawaitable(written):
            asyncio.ensure_future(written)
        return None

    def structure_message(self, data: dict[str, Any]):
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if not isinstance(data, dict):
                raise
            problem = problems(exc.__cause__ or exc, "")
            if "method" not in data and "id" in data:  # the client's answer to one of our requests
                future = self._request_futures.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_exception(
                        JsonRpcInvalidParams(f"the editor's answer could not be read: {problem}")
                    )
                return _Unreadable(None, "a response", problem)
            if not isinstance(data.get("method"), str):
                raise
            return _Unreadable(data.get("id"), data["method"], problem)

    def handle_message(self, message) -> None:
        if (
            self._shutdown
            and isinstance(message, (RPCRequest, _Unreadable))
            and message.id is not None
        ):
            # pygls ignores it, and the client would wait for ever
            error = JsonRpcInvalidRequest(f"{message.method}: the server is shutting down")
            self._send_response(message.id, None, error.to_response_error())
            return None
        if not isinstance(message, _Unreadable):
            return super().handle_message(message)
        text = f"{message.method}: invalid params: {message.problem}"
        if message.id is None:
            self._skip(text)
        else:
            log.info("%s", text)
            self._send_response(message.id, None, JsonRpcInvalidParams(text).to_response_error())
        return None

    def _skip(self, text: str) -> None:
        log.warning("ignored %s", text)
        if self.writer is not None:
            self.notify(
                types.WINDOW_LOG_MESSAGE,
                types.LogMessageParams(
                    type=types.MessageType.Warning, message=f"Handoff: ignored {text}"
                ),
            )

    @lsp_method(types.WORKSPACE_EXECUTE_COMMAND)
    def lsp_workspace__execute_command(self, params: types.ExecuteCommandParams):
        """pygls' handler, for Handoff's commands (``handler(ls, *arguments)``, each argument
        plain JSON): the arguments go as they are (pygls works out the handler's type hints on
        every call), and a command that answers at once is answered in this turn of the event
        loop; one that returns an awaitable (it has to wait) is awaited as a task."""
        handler = self.fm.commands.get(params.command)
        if handler is None:
            raise JsonRpcInvalidParams(f"command {clip(params.command)!r} is not defined")
        result = yield handler, tuple(params.arguments or ()), None
        if inspect.isawaitable(result):
            result = yield _awaited, (result,), None
        return result

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        """pygls' handler, minus the KeyError for a document that was never opened."""
        uri = params.text_document.uri
        if unquote(uri) not in self.workspace.text_documents:
            self._skip(f"{types.TEXT_DOCUMENT_DID_CHANGE} for {uri[:200]}: it was never opened")
            return None
        doc = self.workspace.text_documents[unquote(uri)]
        for change in params.content_changes:  # pygls' loop, big documents' edits made cheap
            fast = None
            if isinstance(change, types.TextDocumentContentChangePartial):
                fast = edits.incremental(doc.source, change, doc.position_codec)
            if fast is None:
                doc.apply_change(change)
            else:
                doc._source = fast
            doc.version = params.text_document.version
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None
