"""Handoff's offline scripted model: an OpenAI-compatible chat completions server on 127.0.0.1.

It is not an AI. It replays a fixed script of replies (tool calls, text, HTTP errors), so the
built-in agent's whole machinery (litellm over real HTTP, tool calls, the worktree, the merge,
the edit) runs with no model, no key and no network. ``make demo`` uses it when no
``HANDOFF_MODEL`` is set; the tests and the benchmarks use it as their model (as mini-swe-agent
ships its test models in the package).

In-process::

    from handoff.offline_model import ScriptedModel

    with ScriptedModel() as model:
        model.tool_call("write_file", {"path": "a.txt", "content": "hi\\n"}).tool_call("finish", {"summary": "done"})
        ...  # litellm with model="openai/scripted-model", api_base=model.url
        assert len(model.requests) == 2

As a process (for end-to-end tests that start the language server elsewhere)::

    python -m handoff.offline_model --script script.json --port-file port.txt [--requests-file r.jsonl]

Script items (JSON): ``{"tool_calls": [{"name": ..., "arguments": {...} | "raw string"}]}``,
``{"content": "..."}``, ``{"status": 500, "body": {...}, "headers": {...}}``. Each request to
``POST /v1/chat/completions`` (or ``/chat/completions``) takes the next item; streaming
requests (``"stream": true``) get the same reply as server-sent events. When the script is
exhausted the reply is a ``finish`` tool call, so nothing ever hangs. The server listens on
127.0.0.1 only and never makes a request of its own.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import files

HOST = "127.0.0.1"  # never any other address
PATHS = ("/v1/chat/completions", "/chat/completions")
EXHAUSTED = {"tool_calls": [{"name": "finish", "arguments": {"summary": "script exhausted"}}]}


def tool_call(name: str, args: dict[str, Any] | str) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": args}]}


def tool_calls(
    calls: Iterable[tuple[str, dict[str, Any] | str] | dict[str, Any]],
) -> dict[str, Any]:
    return {
        "tool_calls": [
            c if isinstance(c, dict) else {"name": c[0], "arguments": c[1]} for c in calls
        ]
    }


def text(content: str) -> dict[str, Any]:
    return {"content": content}


def status(
    code: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    return {"status": code, "body": body, "headers": headers or {}}


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-request (an agent cancelled while it waited) is expected;
        anything else is printed as before."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ScriptedModel:
    """The server, its script (a queue) and the JSON bodies it received."""

    def __init__(self, script: Iterable[dict[str, Any]] = (), *, port: int = 0) -> None:
        self.script: deque[dict[str, Any]] = deque(script)
        self.requests: list[dict[str, Any]] = []
        self.on_request: Any = None  # optional callback(body), e.g. to append to a file
        self._lock = threading.Lock()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._count = 0

    # -- script helpers (chainable) -----------------------------------------------------
    def add(self, item: dict[str, Any]) -> ScriptedModel:
        with self._lock:
            self.script.append(item)
        return self

    def tool_call(self, name: str, args: dict[str, Any] | str) -> ScriptedModel:
        return self.add(tool_call(name, args))

    def tool_calls(
        self, calls: Iterable[tuple[str, dict[str, Any] | str] | dict[str, Any]]
    ) -> ScriptedModel:
        return self.add(tool_calls(calls))

    def text(self, content: str) -> ScriptedModel:
        return self.add(text(content))

    def status(
        self, code: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> ScriptedModel:
        return self.add(status(code, body, headers))

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None, "the server is not running"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def start(self) -> ScriptedModel:
        handler = type("Handler", (_Handler,), {"model": self})
        self._server = _Server((HOST, self._port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ScriptedModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def next_item(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(body)
            self._count += 1
            item = self.script.popleft() if self.script else EXHAUSTED
            if self.on_request is not None:
                self.on_request(body)
            return self._count, item


class _Handler(BaseHTTPRequestHandler):
    model: ScriptedModel
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?")[0] not in PATHS:
            return self._json(
                404, {"error": {"message": f"no route {self.path}", "type": "not_found"}}
            )
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return self._json(
                400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}}
            )
        n, item = self.model.next_item(body)
        if "status" in item:
            err = item.get("body") or {
                "error": {
                    "message": f"scripted error {item['status']}",
                    "type": "server_error",
                    "code": item["status"],
                }
            }
            return self._json(int(item["status"]), err, item.get("headers") or {})
        model = body.get("model", "scripted-model")
        message, finish = _message(n, item)
        usage = {"prompt_tokens": 10 * n, "completion_tokens": 5, "total_tokens": 10 * n + 5}
        if body.get("stream"):
            return self._stream(n, model, message, finish, usage)
        self._json(
            200,
            {
                "id": f"chatcmpl-{n}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "usage": usage,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            },
        )

    def _json(
        self, code: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _stream(
        self, n: int, model: str, message: dict[str, Any], finish: str, usage: dict[str, Any]
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        base = {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        if message.get("content"):
            deltas.append({"content": message["content"]})
        for i, call in enumerate(message.get("tool_calls") or []):
            deltas.append(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": ""},
                        }
                    ]
                }
            )
            deltas.append(
                {
                    "tool_calls": [
                        {"index": i, "function": {"arguments": call["function"]["arguments"]}}
                    ]
                }
            )
        chunks = [
            {**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas
        ]
        chunks.append(
            {
                **base,
                "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                "usage": usage,
            }
        )
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def _message(n: int, item: dict[str, Any]) -> tuple[dict[str, Any], str]:
    calls = [
        {
            "id": f"call_{n}_{i}",
            "type": "function",
            "function": {
                "name": c["name"],
                "arguments": c["arguments"]
                if isinstance(c["arguments"], str)
                else json.dumps(c["arguments"]),
            },
        }
        for i, c in enumerate(item.get("tool_calls") or [])
    ]
    message: dict[str, Any] = {"role": "assistant", "content": item.get("content")}
    if calls:
        message["tool_calls"] = calls
    return message, "tool_calls" if calls else "stop"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--script", type=Path, help="a JSON list of script items")
    parser.add_argument("--port-file", type=Path, required=True, help="where to write the port")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--requests-file", type=Path, help="append each request body here (JSON Lines)"
    )
    args = parser.parse_args(argv)
    script = json.loads(args.script.read_text()) if args.script else []
    server = ScriptedModel(script, port=args.port)
    if args.requests_file:

        def log(body: dict[str, Any]) -> None:
            with args.requests_file.open("a") as f:
                f.write(json.dumps(body) + "\n")

        server.on_request = log
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with server:
        files.write(args.port_file, str(server.port).encode())  # never half a port to read
        print(f"scripted model on {server.url}", file=sys.stderr)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
