"""JSON-RPC 2.0 over a stream, one message a line (the framing of :mod:`.protocol`): both ends of
the daemon's socket use this :class:`Connection`."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
from collections.abc import Callable
from typing import Any

from . import protocol
from .protocol import RemoteError

log = logging.getLogger(__name__)

# dispatch(connection, method, params) -> result (or an awaitable of it); raise RemoteError
Dispatch = Callable[["Connection", str, dict[str, Any]], Any]


class ConnectionLost(RemoteError):
    def __init__(self, message: str = "the connection to the Handoff daemon was lost") -> None:
        super().__init__(message, protocol.INTERNAL_ERROR)


class Connection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dispatch: Dispatch | None = None,
        *,
        name: str = "",
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.dispatch = dispatch
        self.name = name
        self.info: dict[str, Any] = {}  # what the peer said of itself (initialize)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = asyncio.Event()

    # -- sending ---------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        if self.closed.is_set() or self.writer.is_closing():
            raise ConnectionLost()
        message["jsonrpc"] = "2.0"
        self.writer.write(protocol.encode(message))

    def notify(self, method: str, params: dict[str, Any]) -> None:
        """Send a notification; a closed connection drops it (the peer is gone)."""
        try:
            self._send({"method": method, "params": params})
        except (ConnectionLost, OSError):
            pass

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._send({"id": request_id, "method": method, "params": params or {}})
            await self.writer.drain()
            return await future
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise ConnectionLost() from exc
        finally:
            self._pending.pop(request_id, None)

    # -- receiving -------------------------------------------------------------------------
    async def serve(self) -> None:
        """Read until the peer closes; then every pending request fails with ConnectionLost."""
        try:
            while True:
                try:
                    line = await self.reader.readline()
                except (ConnectionResetError, asyncio.IncompleteReadError):
                    break
                except ValueError:  # a line over the reader's limit: the stream is unusable
                    log.warning("%s: a message over the size limit; closing", self.name)
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                try:
                    message = protocol.decode(line)
                except ValueError:
                    self._error(None, protocol.PARSE_ERROR, "not a JSON-RPC message")
                    continue
                self._received(message)
        finally:
            self.close()

    def _received(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method is None:  # an answer
            future = self._pending.get(message.get("id"))  # type: ignore[arg-type]
            if future is None or future.done():
                return
            error = message.get("error")
            if error is not None:
                future.set_exception(
                    RemoteError(
                        str(error.get("message", "error")),
                        int(error.get("code", protocol.INTERNAL_ERROR)),
                        error.get("data"),
                    )
                )
            else:
                future.set_result(message.get("result"))
            return
        params = message.get("params")
        if params is None:
            params = {}
        if not isinstance(method, str) or not isinstance(params, dict):
            self._error(message.get("id"), protocol.INVALID_REQUEST, "bad method or params")
            return
        task = asyncio.get_running_loop().create_task(
            self._handle(message.get("id"), method, params)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, request_id: Any, method: str, params: dict[str, Any]) -> None:
        try:
            if self.dispatch is None:
                raise RemoteError(f"no method {method}", protocol.METHOD_NOT_FOUND)
            result = self.dispatch(self, method, params)
            if inspect.isawaitable(result):
                result = await result
        except RemoteError as exc:
            if request_id is not None:
                self._error(request_id, exc.code, str(exc), exc.data)
            return
        except Exception as exc:  # a bug: logged here, a one-line answer there
            log.exception("%s: %s failed", self.name, method)
            if request_id is not None:
                self._error(request_id, protocol.INTERNAL_ERROR, f"{method} failed: {exc}")
            return
        if request_id is not None:
            try:
                self._send({"id": request_id, "result": result if result is not None else {}})
            except (ConnectionLost, OSError):
                pass
            except (
                TypeError,
                ValueError,
            ) as exc:  # a bug: the answer is not JSON; say so, never hang
                log.error("%s: the answer to %s is not JSON: %s", self.name, method, exc)
                self._error(request_id, protocol.INTERNAL_ERROR, f"{method} failed: {exc}")

    def _error(self, request_id: Any, code: int, message: str, data: Any = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        try:
            self._send({"id": request_id, "error": error})
        except (ConnectionLost, OSError):
            pass

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionLost())
        try:
            self.writer.close()
        except (OSError, RuntimeError):
            pass


def spawn_serve(
    conn: Connection, on_closed: Callable[[Connection], None] | None = None
) -> asyncio.Task[None]:
    """Run ``conn.serve()`` in a task; ``on_closed(conn)`` when it ends."""
    task = asyncio.get_running_loop().create_task(conn.serve(), name=f"rpc {conn.name}")

    def done(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("%s: reader failed", conn.name, exc_info=t.exception())
        if on_closed is not None:
            on_closed(conn)

    task.add_done_callback(done)
    return task
