"""Handoff's side of the Agent Client Protocol: what an ACP agent may ask of its client.

File reads and writes go through :class:`~.tools.Workspace`, so they get exactly the built-in
agent's checks (inside the worktree, no ``.git``, no symlink out, no device, no write through
a hard link). Terminals run through :mod:`..sandbox` like ``run_command`` (``commandPolicy``).
Permission requests are answered by the ``permissions`` policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shlex
import subprocess
import threading
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from acp import RequestError
from acp.schema import (
    AllowedOutcome,
    CreateTerminalResponse,
    DeniedOutcome,
    KillTerminalResponse,
    PermissionOption,
    ReadTextFileResponse,
    ReleaseTerminalResponse,
    RequestPermissionResponse,
    TerminalExitStatus,
    TerminalOutputResponse,
    ToolCallUpdate,
    WaitForTerminalExitResponse,
    WriteTextFileResponse,
)
from handoff.text import split_keepends

from .. import sandbox
from ..capped import Tail
from ..processes import background
from .tools import ToolError, Workspace, _read_bytes

TERMINAL_OUTPUT_BYTES = 1_000_000  # kept per terminal when the agent sets no outputByteLimit
TERMINAL_TIMEOUT_S = 300.0  # as run_command: at most this long a command
OUTSIDE_KINDS = frozenset({"fetch"})  # tool kinds that reach beyond the worktree by nature


class _Terminal:
    """One command started for the agent, confined like ``run_command``."""

    def __init__(
        self,
        launch_cm: Any,
        launch: sandbox.Launch,
        proc: subprocess.Popen[bytes],
        limit: int,
        loop: Any,
    ) -> None:
        self._cm, self.launch, self.proc, self.limit = launch_cm, launch, proc, limit
        self.out = Tail(limit)
        self.done = anyio.Event()
        self.limiter: asyncio.Task[None] | None = None
        self._loop = loop
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        try:
            # Popen(stdout=PIPE) with the default buffering gives a BufferedReader
            while chunk := typing.cast(io.BufferedReader, self.proc.stdout).read1(65536):
                self.out.add(chunk)  # the spec: truncated from the beginning
        except (OSError, ValueError):
            pass
        self.proc.wait()
        self._loop.call_soon_threadsafe(self.done.set)

    def output(self) -> str:
        return self.out.text()

    def exit_status(self) -> TerminalExitStatus | None:
        code = self.proc.returncode
        if code is None:
            return None
        if code < 0:
            import signal

            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return TerminalExitStatus(exit_code=None, signal=name)
        return TerminalExitStatus(exit_code=code, signal=None)

    def kill(self) -> None:
        self.launch.stop(self.proc)

    def close(self) -> None:
        self.kill()
        if self.limiter is not None:
            self.limiter.cancel()
        with contextlib.suppress(Exception):
            self._cm.__exit__(None, None, None)


class HandoffClient:
    """The ACP ``Client`` of one handoff session (one agent process).

    ``on_update(update)`` gets every ``session/update``; ``ask(question)`` (or None) answers
    ``permissions = "ask"``; ``record(event)`` writes the transcript."""

    def __init__(
        self,
        worktree: Path,
        *,
        policy: str,
        command_policy: str,
        pass_env: list[str],
        timeout_s: float,
        on_update: Callable[[Any], None],
        record: Callable[[dict[str, Any]], None],
        ask: Callable[[dict[str, Any]], Awaitable[str]] | None = None,
    ) -> None:
        self.ws = Workspace(
            worktree,
            policy=command_policy,
            pass_env=pass_env,
            command_timeout_s=min(TERMINAL_TIMEOUT_S, timeout_s),
        )
        self.root = self.ws.root
        self.given_root = os.path.abspath(worktree)
        self.policy = policy
        self.on_update, self.record, self.ask = on_update, record, ask
        self.timeout_s = min(TERMINAL_TIMEOUT_S, timeout_s)
        self.terminals: dict[str, _Terminal] = {}
        self._next = 0

    # -- paths ------------------------------------------------------------------------------
    def rel(self, path: str) -> str:
        """The worktree-relative form of an agent's path (ACP paths are absolute)."""
        if not os.path.isabs(path):
            return path  # Workspace.resolve judges it like a built-in tool path
        p = os.path.normpath(path)
        for root in (str(self.root), self.given_root):
            if p == root or p.startswith(root + os.sep):
                return os.path.relpath(p, root)
        raise ToolError(f"{path[:200]!r} is outside the session's worktree")

    def inside(self, path: str) -> bool:
        try:
            self.ws.resolve(self.rel(path))
            return True
        except ToolError:
            return False

    def _refuse(self, method: str, exc: ToolError | OSError) -> RequestError:
        msg = str(exc) if isinstance(exc, ToolError) else (exc.strerror or type(exc).__name__)
        self.record({"type": "acp_refused", "method": method, "reason": msg})
        return RequestError(-32602, f"handoff refused {method}: {msg}")

    # -- fs ---------------------------------------------------------------------------------
    async def read_text_file(
        self,
        session_id: str,
        path: str,
        line: int | None = None,
        limit: int | None = None,
        **kwargs: Any,
    ) -> ReadTextFileResponse:
        try:
            real = self.ws._existing(self.rel(path), "file")
            data = await anyio.to_thread.run_sync(_read_bytes, real)
        except (ToolError, OSError) as exc:
            raise self._refuse("fs/read_text_file", exc) from None
        text = data.decode("utf-8", "replace")
        if line is not None or limit is not None:
            lines = split_keepends(text)
            start = max((line or 1) - 1, 0)
            text = "".join(lines[start : start + limit if limit is not None else None])
        return ReadTextFileResponse(content=text)

    async def write_text_file(
        self, session_id: str, path: str, content: str, **kwargs: Any
    ) -> WriteTextFileResponse | None:
        try:
            rel = self.rel(path)
            note = await anyio.to_thread.run_sync(self.ws.write_file, rel, content)
        except (ToolError, OSError, ValueError) as exc:
            if isinstance(exc, ValueError):
                exc = ToolError(str(exc))
            raise self._refuse("fs/write_text_file", exc) from None
        self.record({"type": "acp_write", "path": Path(rel).as_posix(), "result": note})
        return WriteTextFileResponse()

    # -- permissions ------------------------------------------------------------------------
    def _pick(self, options: list[PermissionOption], allow: bool) -> RequestPermissionResponse:
        kinds = ("allow_once", "allow_always") if allow else ("reject_once", "reject_always")
        for kind in kinds:
            for o in options:
                if o.kind == kind:
                    return RequestPermissionResponse(
                        outcome=AllowedOutcome(outcome="selected", option_id=o.option_id)
                    )
        return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))

    def within_worktree(self, tool_call: ToolCallUpdate) -> bool:
        """Whether what the tool call names stays in the worktree (its locations, and the
        paths and working folder in its input)."""
        if tool_call.kind in OUTSIDE_KINDS:
            return False
        paths = [loc.path for loc in tool_call.locations or []]
        raw = tool_call.raw_input if isinstance(tool_call.raw_input, dict) else {}
        for key in ("path", "file_path", "filePath", "abs_path", "cwd", "workdir", "notebook_path"):
            if isinstance(raw.get(key), str):
                paths.append(raw[key])
        return all(self.inside(p) for p in paths)

    async def request_permission(
        self,
        session_id: str,
        tool_call: ToolCallUpdate,
        options: list[PermissionOption],
        **kwargs: Any,
    ) -> RequestPermissionResponse:
        question = {
            "toolCall": {
                "title": tool_call.title,
                "kind": tool_call.kind,
                "locations": [loc.path for loc in tool_call.locations or []],
            },
            "options": [{"optionId": o.option_id, "name": o.name, "kind": o.kind} for o in options],
        }
        if self.policy == "ask" and self.ask is not None:
            chosen = await self.ask(question)
            known = {o.option_id for o in options}
            answer = (
                RequestPermissionResponse(
                    outcome=AllowedOutcome(outcome="selected", option_id=chosen)
                )
                if chosen in known
                else self._pick(options, allow=False)
            )
            how = "asked"
        else:
            allow = self.policy == "worktree" and self.within_worktree(tool_call)
            answer = self._pick(options, allow=allow)
            how = self.policy if self.policy != "ask" else "ask (no one to ask: rejected)"
        outcome = answer.outcome
        chosen_id = getattr(outcome, "option_id", None)
        kind = next((o.kind for o in options if o.option_id == chosen_id), "cancelled")
        self.record({"type": "acp_permission", **question, "policy": how, "answer": kind})
        return answer

    # -- updates ----------------------------------------------------------------------------
    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self.on_update(update)

    # -- terminals --------------------------------------------------------------------------
    async def create_terminal(
        self,
        session_id: str,
        command: str,
        args: list[str] | None = None,
        env: list[Any] | None = None,
        cwd: str | None = None,
        output_byte_limit: int | None = None,
        **kwargs: Any,
    ) -> CreateTerminalResponse:
        shell = shlex.join([command, *args]) if args else command
        try:
            if "\0" in shell:
                raise ToolError("the command may not contain NUL")
            if self.ws.policy == "deny":
                raise ToolError(sandbox.DENIED)
            kind = "none" if self.ws.policy == "allow" else sandbox.available()
            if kind is None:
                raise ToolError(sandbox.UNAVAILABLE)
            sub = self.ws.resolve(self.rel(cwd), want="dir") if cwd else self.root
        except ToolError as exc:
            raise self._refuse("terminal/create", exc) from None
        if sub != self.root:
            shell = f"cd {shlex.quote(os.path.relpath(sub, self.root))} && {shell}"
        cm = sandbox.prepare(shell, root=self.root, kind=kind, pass_env=self.ws.pass_env)
        launch = cm.__enter__()
        extra = {e.name: e.value for e in env or []}
        try:
            proc = subprocess.Popen(
                launch.argv,
                cwd=self.root,
                env={**launch.env, **extra},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            cm.__exit__(None, None, None)
            raise self._refuse("terminal/create", exc) from None
        background(proc.pid)
        term = _Terminal(
            cm, launch, proc, output_byte_limit or TERMINAL_OUTPUT_BYTES, asyncio.get_running_loop()
        )
        self._next += 1
        tid = f"term-{self._next}"
        self.terminals[tid] = term
        self.record({"type": "acp_terminal", "terminalId": tid, "command": shell, "sandbox": kind})

        async def limit() -> None:  # as run_command: a command has a time limit
            with anyio.move_on_after(self.timeout_s):
                await term.done.wait()
            await anyio.to_thread.run_sync(term.kill)

        term.limiter = asyncio.get_running_loop().create_task(limit())
        return CreateTerminalResponse(terminal_id=tid)

    def _term(self, tid: str) -> _Terminal:
        term = self.terminals.get(tid)
        if term is None:
            raise RequestError(-32602, f"no terminal {tid!r}")
        return term

    async def terminal_output(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> TerminalOutputResponse:
        t = self._term(terminal_id)
        return TerminalOutputResponse(
            output=t.output(), truncated=t.out.truncated, exit_status=t.exit_status()
        )

    async def wait_for_terminal_exit(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> WaitForTerminalExitResponse:
        t = self._term(terminal_id)
        await t.done.wait()
        st = t.exit_status()
        self.record(
            {
                "type": "acp_terminal_exit",
                "terminalId": terminal_id,
                "exitCode": st.exit_code if st else None,
                "output": t.output()[-4000:],
            }
        )
        return WaitForTerminalExitResponse(
            exit_code=st.exit_code if st else None, signal=st.signal if st else None
        )

    async def kill_terminal(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> KillTerminalResponse | None:
        await anyio.to_thread.run_sync(self._term(terminal_id).kill)
        return KillTerminalResponse()

    async def release_terminal(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> ReleaseTerminalResponse | None:
        t = self.terminals.pop(terminal_id, None)
        if t is not None:
            await anyio.to_thread.run_sync(t.close)
        return ReleaseTerminalResponse()

    def close(self) -> None:
        for t in self.terminals.values():
            t.close()
        self.terminals.clear()

    # -- the rest -----------------------------------------------------------------------------
    async def ext_method(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise RequestError.method_not_found(method)

    async def ext_notification(self, method: str, params: dict[str, Any]) -> None:
        return None

    def on_connect(self, conn: Any) -> None:
        return None
