"""Raw JSON-RPC to the server under test: any params, well-typed or not, and the process around it.

pytest-lsp's client serializes params through the lsprotocol types, so it cannot send a negative
line or ``arguments: [null]``. These helpers write the JSON message as given, on the same
connection as the :class:`~tests.support.lsp_client.Editor` (so its recording of stdout and its
notifications stay whole), and wait for the answer with a timeout: a request the server never
answers is a test failure, not a hang.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from pathlib import Path
from typing import Any

from pygls.exceptions import JsonRpcException

from .lsp_client import Editor, _plain

REQUEST_TIMEOUT = 15.0
INTERNAL_ERROR = -32603


class NoAnswer(AssertionError):
    pass


async def request(
    editor: Editor, method: str, params: Any, timeout: float = REQUEST_TIMEOUT
) -> Any:
    """Send ``method`` with ``params`` exactly as given; the result as plain JSON values, or the
    server's error raised as :class:`JsonRpcException`."""
    proto = editor.client.protocol
    msg_id = f"raw-{uuid.uuid4().hex[:12]}"
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    proto._request_futures[msg_id] = future
    proto._result_types[msg_id] = None
    proto._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    try:
        return _plain(await asyncio.wait_for(asyncio.wrap_future(future), timeout))
    except asyncio.TimeoutError:
        proto._request_futures.pop(msg_id, None)
        raise NoAnswer(
            f"no answer to {method} within {timeout} s (params: {str(params)[:300]})"
        ) from None


def notify(editor: Editor, method: str, params: Any) -> None:
    editor.client.protocol._send_data({"jsonrpc": "2.0", "method": method, "params": params})


async def command(
    editor: Editor, name: str, *arguments: Any, timeout: float = REQUEST_TIMEOUT
) -> Any:
    return await request(
        editor, "workspace/executeCommand", {"command": name, "arguments": list(arguments)}, timeout
    )


async def error_of(editor: Editor, method: str, params: Any) -> JsonRpcException:
    """The error the server answers (it must answer with one, and not an internal error)."""
    try:
        result = await request(editor, method, params)
    except JsonRpcException as exc:
        assert exc.code != INTERNAL_ERROR, f"internal error for {method} {str(params)[:200]}: {exc}"
        return exc
    raise AssertionError(f"{method} {str(params)[:200]} succeeded: {str(result)[:300]}")


async def command_error(editor: Editor, name: str, *arguments: Any) -> str:
    exc = await error_of(
        editor, "workspace/executeCommand", {"command": name, "arguments": list(arguments)}
    )
    return str(exc)


async def still_serving(editor: Editor, uri: str | None = None) -> list[dict[str, Any]]:
    """A listSessions (and a code action on ``uri``) answered correctly; returns the sessions."""
    result = await command(editor, "handoff.listSessions", {})
    assert isinstance(result, dict) and isinstance(result.get("sessions"), list), result
    if uri is not None:
        actions = await request(
            editor,
            "textDocument/codeAction",
            {
                "textDocument": {"uri": uri},
                "range": {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}},
                "context": {"diagnostics": []},
            },
        )
        assert any(a["title"] == "Delegate to background agent" for a in actions or []), actions
    return result["sessions"]


# -- the server process ------------------------------------------------------------------------
def server_pid(editor: Editor) -> int:
    return editor.client._server.pid


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren...), from /proc; zombies count (a
    child nobody reaped is a leak too)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
