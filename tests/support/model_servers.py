"""Scripted model servers on 127.0.0.1 for real published agents: Anthropic Messages (SSE),
OpenAI Responses (SSE) and chat completions, Gemini generateContent (SSE).

Real agents send side requests (titles, token counts, quota checks) as well as their main
loop, so the script is not a queue: each reply is chosen from the request itself. A request
that offers tools walks one task, ``edit``: read FILE, then replace OLD with NEW in it, then
say DONE; which step comes next is the number of tool results already in the conversation.
Requests without tools get a short text. Every request is kept in :attr:`ModelServers.requests`.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"  # never any other address


class Task:
    """Read ``file``, replace ``old`` with ``new``, finish saying ``done``."""

    def __init__(self, file: str, old: str, new: str, done: str) -> None:
        self.file, self.old, self.new, self.done = file, old, new, done

    def abs_path(self, body: str) -> str:
        """The file's absolute path, from the working folder the agent's prompt names."""
        m = re.search(r"Workspace Directories:\W*\n\s*- (/[^\s\"'`<>\\]+)", body) or re.search(
            r"(?:Working directory|working directory|cwd|current working directory)"
            r"[^/\n]{0,40}(/[^\s\"'`<>\\]+)",
            body,
        )
        root = m.group(1).rstrip(".,;:") if m else ""
        return f"{root}/{self.file}" if root else self.file


def _example(schema: dict[str, Any]) -> Any:
    """A small value that fits a JSON schema (a side request that wants structured output)."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = str(schema.get("type", "object")).lower()
    if kind == "object":
        return {k: _example(v) for k, v in (schema.get("properties") or {}).items()}
    return {"string": "ok", "integer": 10, "number": 1, "boolean": False, "array": []}.get(kind)


def _tool(names: list[str], *wanted: str) -> str | None:
    for w in wanted:
        for n in names:
            if n == w or n.endswith("__" + w) or n.endswith("_" + w):
                return n
    return None


def _props(schema: Any) -> dict[str, Any]:
    """The ``properties`` of a tool's parameter schema (empty when it has none)."""
    return (schema.get("properties") or {}) if isinstance(schema, dict) else {}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up


class ModelServers:
    def __init__(self, task: Task) -> None:
        self.task = task
        self.requests: list[dict[str, Any]] = []
        self.chats = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer._record(self.path, None)
                self._json(404, {"error": {"message": "not here", "type": "not_found"}})

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {}
                outer._record(self.path, body)
                path = self.path.split("?")[0]
                if path.endswith("/messages/count_tokens"):
                    return self._json(200, {"input_tokens": 100})
                if path.endswith("/messages"):
                    return outer._anthropic(self, body)
                if path.endswith("/responses"):
                    return outer._responses(self, body)
                if path.endswith("/chat/completions"):
                    return outer._chat(self, body)
                if ":streamGenerateContent" in path or ":generateContent" in path:
                    return outer._gemini(self, body, stream=":stream" in path)
                if ":countTokens" in path:
                    return self._json(200, {"totalTokens": 100})
                self._json(404, {"error": {"message": f"no {path}"}})

            def _json(self, code: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def sse(self, events: list[tuple[str | None, Any]]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                for name, data in events:
                    chunk = (f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n"
                    self.wfile.write(chunk.encode())
                self.wfile.flush()
                self.close_connection = True

        self.server = _Server((HOST, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server.server_address[1]}"

    def __enter__(self) -> ModelServers:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _record(self, path: str, body: Any) -> None:
        with self.lock:
            self.requests.append({"path": path, "body": body})

    # -- the task, as a step --------------------------------------------------------------
    def _step(
        self, done_results: int, tools: dict[str, dict[str, Any]], text: str
    ) -> tuple[str, str, dict[str, Any]] | str:
        """("tool", name, args) for the next tool call, or the final text. ``tools``: each
        offered tool's name and its parameters' JSON schema ``properties``; the arguments take
        the names that tool's schema gives (``file_path``, ``path``, ``filePath``, ...)."""
        t = self.task
        path = t.abs_path(text)
        names = list(tools)
        read = _tool(names, "Read", "read_file", "ReadFile", "view", "read")
        edit = _tool(names, "Edit", "replace", "edit_file", "Replace", "edit")

        def key(tool: str, *options: str) -> str:
            props = tools.get(tool) or {}
            return next((o for o in options if o in props), options[0])

        paths = ("file_path", "absolute_path", "path", "filePath")
        if done_results == 0 and read:
            return ("tool", read, {key(read, *paths): path})
        if done_results <= 1 and edit:
            args = {
                key(edit, *paths): path,
                key(edit, "old_string", "old_str", "oldString"): t.old,
                key(edit, "new_string", "new_str", "newString"): t.new,
            }
            if "instruction" in (tools.get(edit) or {}):  # gemini-cli's wants a reason too
                args["instruction"] = f"In {t.file}, replace the line as asked."
            return ("tool", edit, args)
        return t.done

    # -- Anthropic Messages -----------------------------------------------------------------
    def _anthropic(self, h: Any, body: dict[str, Any]) -> None:
        tools = {x.get("name", ""): _props(x.get("input_schema")) for x in body.get("tools") or []}
        results = sum(
            1
            for m in body.get("messages", [])
            if isinstance(m.get("content"), list)
            for c in m["content"]
            if c.get("type") == "tool_result"
        )
        step = self._step(results, tools, json.dumps(body)) if tools else "ok"
        mid = f"msg_{uuid.uuid4().hex[:12]}"
        usage = {"input_tokens": 100, "output_tokens": 20}
        if isinstance(step, str):
            block, deltas, stop = (
                {"type": "text", "text": ""},
                [{"type": "text_delta", "text": step}],
                "end_turn",
            )
            full = {"type": "text", "text": step}
        else:
            _, name, args = step
            tid = f"toolu_{uuid.uuid4().hex[:12]}"
            block = {"type": "tool_use", "id": tid, "name": name, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": json.dumps(args)}]
            stop, full = "tool_use", {"type": "tool_use", "id": tid, "name": name, "input": args}
        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "m"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            return h._json(200, {**message, "content": [full], "stop_reason": stop})
        h.sse(
            [
                ("message_start", {"type": "message_start", "message": message}),
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": block},
                ),
                *[
                    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
                    for d in deltas
                ],
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop, "stop_sequence": None},
                        "usage": {"output_tokens": 20},
                    },
                ),
                ("message_stop", {"type": "message_stop"}),
            ]
        )

    # -- OpenAI Responses --------------------------------------------------------------------
    def _responses(self, h: Any, body: dict[str, Any]) -> None:
        items = body.get("input") or []
        outputs = sum(
            1
            for i in items
            if isinstance(i, dict)
            and i.get("type") in ("function_call_output", "custom_tool_call_output")
        )
        tools = {t.get("name", ""): t for t in body.get("tools") or [] if isinstance(t, dict)}
        t = self.task
        rid = f"resp_{uuid.uuid4().hex[:12]}"
        if outputs == 0 and tools:
            text_all = json.dumps(body)
            patch = f"*** Begin Patch\n*** Update File: {t.file}\n@@\n-{t.old}\n+{t.new}\n*** End Patch\n"
            if "apply_patch" in tools and tools["apply_patch"].get("type") == "custom":
                item = {
                    "type": "custom_tool_call",
                    "id": f"ctc_{rid}",
                    "call_id": f"call_{rid}",
                    "name": "apply_patch",
                    "input": patch,
                    "status": "completed",
                }
            elif "apply_patch" in tools:
                item = {
                    "type": "function_call",
                    "id": f"fc_{rid}",
                    "call_id": f"call_{rid}",
                    "name": "apply_patch",
                    "arguments": json.dumps({"input": patch}),
                    "status": "completed",
                }
            else:
                name = _tool(list(tools), "shell", "shell_command", "exec_command") or "shell"
                script = f"apply_patch <<'EOF'\n{patch}EOF\n"
                args = (
                    {"command": ["bash", "-lc", script]}
                    if name == "shell"
                    else {"command": script, "cmd": script}
                )
                item = {
                    "type": "function_call",
                    "id": f"fc_{rid}",
                    "call_id": f"call_{rid}",
                    "name": name,
                    "arguments": json.dumps(args),
                    "status": "completed",
                }
            del text_all
        else:
            text = t.done if tools else "ok"
            item = {
                "type": "message",
                "id": f"msg_{rid}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        usage = {
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 20,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 120,
        }
        response = {
            "id": rid,
            "object": "response",
            "status": "completed",
            "model": body.get("model", "m"),
            "output": [item],
            "usage": usage,
        }
        if not body.get("stream"):
            return h._json(200, response)
        events: list[tuple[str | None, Any]] = [
            (
                "response.created",
                {
                    "type": "response.created",
                    "response": {**response, "status": "in_progress", "output": []},
                },
            ),
            (
                "response.output_item.added",
                {"type": "response.output_item.added", "output_index": 0, "item": item},
            ),
        ]
        if item["type"] == "message":
            events.append(
                (
                    "response.output_text.delta",
                    {
                        "type": "response.output_text.delta",
                        "item_id": item["id"],
                        "output_index": 0,
                        "content_index": 0,
                        "delta": item["content"][0]["text"],
                    },
                )
            )
        events += [
            (
                "response.output_item.done",
                {"type": "response.output_item.done", "output_index": 0, "item": item},
            ),
            ("response.completed", {"type": "response.completed", "response": response}),
        ]
        h.sse(events)

    # -- OpenAI chat completions (aider without tools; copilot, opencode with tools) -----------
    def _chat(self, h: Any, body: dict[str, Any]) -> None:
        t = self.task
        tools = {
            (x.get("function") or {}).get("name", ""): _props(
                (x.get("function") or {}).get("parameters")
            )
            for x in body.get("tools") or []
            if isinstance(x, dict)
        }
        calls: list[dict[str, Any]] = []
        if tools:
            results = sum(1 for m in body.get("messages", []) if m.get("role") == "tool")
            step = self._step(results, tools, json.dumps(body))
            if isinstance(step, str):
                content = step
            else:
                _, name, args = step
                content = ""
                calls = [
                    {
                        "index": 0,
                        "id": f"call_{uuid.uuid4().hex[:12]}",
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(args)},
                    }
                ]
        else:
            with self.lock:  # aider's prompt holds example turns: the first request is the task
                self.chats += 1
                first = self.chats == 1
            content = (
                f"{t.done}\n\n{t.file}\n```python\n<<<<<<< SEARCH\n{t.old}\n=======\n{t.new}\n"
                f">>>>>>> REPLACE\n```\n"
                if first
                else t.done
            )
        finish = "tool_calls" if calls else "stop"
        cid = f"chatcmpl-{uuid.uuid4().hex[:10]}"
        usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        message: dict[str, Any] = {"role": "assistant", "content": content or None}
        if calls:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
        if not body.get("stream"):
            return h._json(
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "m"),
                    "choices": [{"index": 0, "finish_reason": finish, "message": message}],
                    "usage": usage,
                },
            )
        chunk = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": body.get("model", "m"),
        }
        delta: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            delta["tool_calls"] = calls
        h.sse(
            [
                (None, {**chunk, "choices": [{"index": 0, "delta": delta}]}),
                (None, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}),
                (None, {**chunk, "choices": [], "usage": usage}),
            ]
        )
        h.wfile.write(b"data: [DONE]\n\n")

    # -- Gemini generateContent ---------------------------------------------------------------
    def _gemini(self, h: Any, body: dict[str, Any], *, stream: bool) -> None:
        tools = {
            f.get("name", ""): _props(f.get("parametersJsonSchema") or f.get("parameters"))
            for t in body.get("tools") or []
            for f in t.get("functionDeclarations") or []
        }
        results = sum(
            1
            for c in body.get("contents", [])
            for p in c.get("parts") or []
            if "functionResponse" in p
        )
        gen = body.get("generationConfig") or {}
        schema = gen.get("responseJsonSchema") or gen.get("responseSchema")
        step = (
            self._step(results, tools, json.dumps(body))
            if tools
            else json.dumps(_example(schema))
            if schema
            else "ok"
        )  # side calls (routing) want JSON
        if isinstance(step, str):
            part: dict[str, Any] = {"text": step}
        else:
            _, name, args = step
            part = {"functionCall": {"name": name, "args": args}}
        payload = {
            "candidates": [
                {"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": 100,
                "candidatesTokenCount": 20,
                "totalTokenCount": 120,
            },
            "modelVersion": "gemini-2.5-flash",
        }
        if stream:
            h.sse([(None, payload)])
        else:
            h._json(200, payload)
