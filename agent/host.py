"""The agent host: one child process that runs the language server's built-in agents.

The built-in agent is litellm in a loop: seconds of import, ~200 MB, and CPU for every step
(request building, JSON of a growing conversation, cost tables). In the editor's server process,
even in worker threads, that work competes with the event loop for the GIL (measured: codeAction
p99 65 ms with 8 agents in threads, 7 ms with the agents in another process). So the server keeps
the sessions and runs their built-in agents here, in one long-lived process shared by all of them
(litellm is imported once, not per session), and only relays what they record and report.

The wire is JSON lines on the host's stdin and stdout:

- server -> host: ``{"op": "run", "id", "ctx"}`` (``ctx``: the pickled :class:`AgentContext`
  fields, base64) and ``{"op": "cancel", "id"}``;
- host -> server: ``{"id", "t": "progress", "message", "steps", "cost"}``, and one ending per
  run: ``"done"`` (the :class:`Outcome`), ``"error"`` (an :class:`AgentError`) or
  ``"cancelled"``. The host appends the run's transcript to the context's ``transcript_path``
  itself (secrets replaced, as the server's store does); only a context without one gets its
  events relayed as ``{"id", "t": "record", "event"}``.

The end of the host's stdin (the server exited, even when killed) cancels every run, which kills
their commands, and the host exits. The host exits too after :data:`IDLE_S` without runs; the next
run starts a new one.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import os
import pickle
import sys
import uuid
from typing import Any, BinaryIO

from .backends.base import AgentContext, AgentError, LimitReached, Outcome
from .processes import background

log = logging.getLogger(__name__)

IDLE_S = 300.0  # a host without runs for this long exits (litellm's memory goes with it)
CANCEL_GRACE_S = 10.0  # how long a cancelled run may take to stop its commands
LINE_LIMIT = 1 << 26  # a record carries at most a tool result; 64 MB is far beyond that
_CALLBACKS = ("record", "progress", "started", "ask")  # stay in the server
_FIELDS = tuple(f.name for f in dataclasses.fields(AgentContext) if f.name not in _CALLBACKS)


class _Run:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.ended: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()


class AgentHost:
    """The server's side: a :class:`Backend` for ``builtin`` that runs it in the host process."""

    name = "builtin"

    def __init__(self, *, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None
        self._runs: dict[str, _Run] = {}
        self._idle: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def run(self, ctx: AgentContext) -> Outcome:
        run_id = f"{ctx.session_id}/{uuid.uuid4().hex[:8]}"
        run = self._runs[run_id] = _Run(ctx)
        try:
            proc = await self._ensure()
            spec = pickle.dumps({k: getattr(ctx, k) for k in _FIELDS})
            await self._send(
                proc, {"op": "run", "id": run_id, "ctx": base64.b64encode(spec).decode()}
            )
            end = await asyncio.shield(run.ended)
        except asyncio.CancelledError:
            await asyncio.shield(self._cancel(run_id, run))
            raise
        finally:
            del self._runs[run_id]
            self._idle_later()
        kind = end.get("t")
        if kind == "done":
            return Outcome(end["summary"], end["steps"], end["cost_usd"], end["messages"])
        cls = LimitReached if end.get("kind") == "LimitReached" else AgentError
        raise cls(
            end.get("message") or "the agent stopped",
            steps=end.get("steps", 0),
            cost_usd=end.get("cost_usd", 0.0),
        )

    async def _cancel(self, run_id: str, run: _Run) -> None:
        """Ask the host to stop ``run_id`` and wait (a little) until its commands are gone."""
        proc = self._proc
        if proc is None or run.ended.done():
            return
        try:
            await self._send(proc, {"op": "cancel", "id": run_id})
            await asyncio.wait_for(asyncio.shield(run.ended), CANCEL_GRACE_S)
        except (OSError, asyncio.TimeoutError, AgentError):
            log.warning("agent host: run %s did not stop in time; stopping the host", run_id)
            await self.close()

    async def _send(self, proc: asyncio.subprocess.Process, msg: dict[str, Any]) -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(msg).encode() + b"\n")
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise AgentError("the agent host process is gone (see the server log)") from None

    async def _ensure(self) -> asyncio.subprocess.Process:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._proc is None or self._proc.returncode is not None:
                self._proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "handoff.agent.host",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=None,
                    limit=LINE_LIMIT,
                    start_new_session=True,  # the editor's ^C is not for it
                )
                log.info("agent host started (pid %d)", self._proc.pid)
                self._reader = asyncio.get_running_loop().create_task(self._read(self._proc))
            return self._proc

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while line := await proc.stdout.readline():
                try:
                    msg = json.loads(line)
                    self._dispatch(msg)
                except Exception:  # one bad line must not stop the relay of every session
                    log.exception("agent host: bad message %.200r", line)
        except (ValueError, asyncio.LimitOverrunError):  # a line over LINE_LIMIT
            log.error("agent host: a message over %d bytes; stopping the host", LINE_LIMIT)
            proc.kill()
        code = await proc.wait()
        if self._proc is proc:
            self._proc = None
        for run_id, run in list(self._runs.items()):
            if not run.ended.done():
                run.ended.set_result(
                    {
                        "t": "error",
                        "message": "the agent host process ended unexpectedly "
                        f"(exit code {code}); see the server log",
                        "steps": 0,
                        "cost_usd": 0.0,
                    }
                )
                log.error("agent host ended (exit code %s) while %s ran", code, run_id)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        run = self._runs.get(msg.get("id", ""))
        if run is None:
            return  # a run that was given up on
        kind = msg.get("t")
        if kind == "record":
            run.ctx.record(msg["event"])
        elif kind == "progress":
            run.ctx.progress(msg["message"], msg["steps"], msg["cost"])
        elif not run.ended.done():
            run.ended.set_result(msg)

    def _idle_later(self) -> None:
        if self._runs or self._proc is None or self._idle is not None:
            return
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self.idle_s, self._close_if_idle)

    def _close_if_idle(self) -> None:
        self._idle = None
        if not self._runs:
            self._closing = asyncio.get_running_loop().create_task(self.close())

    async def close(self) -> None:
        """Stop the host: end of input first (it cancels its runs), then a kill."""
        proc, self._proc = self._proc, None
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if proc is None or proc.returncode is not None:
            return
        try:
            assert proc.stdin is not None
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), CANCEL_GRACE_S)
        except (asyncio.TimeoutError, OSError):
            from .processes import kill_group

            kill_group(proc.pid)
            await proc.wait()
        log.info("agent host stopped (pid %d, exit code %s)", proc.pid, proc.returncode)


# -- the host process -------------------------------------------------------------------------


class _Host:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def emit(self, msg: dict[str, Any]) -> None:
        self.out.write(json.dumps(msg, default=str).encode() + b"\n")

    async def serve(self) -> None:
        from .backends import model

        loop = asyncio.get_running_loop()
        warm = loop.run_in_executor(None, model.import_litellm)  # the first run need not wait
        stdin = asyncio.StreamReader(limit=LINE_LIMIT)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        while line := await stdin.readline():
            msg = json.loads(line)
            if msg["op"] == "run":
                spec = pickle.loads(base64.b64decode(msg["ctx"]))
                self.tasks[msg["id"]] = loop.create_task(self.run(msg["id"], spec))
            elif msg["op"] == "cancel" and msg["id"] in self.tasks:
                self.tasks[msg["id"]].cancel()
        # The server is gone (or closed us): stop every run, their commands with them.
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        warm.cancel()

    async def run(self, run_id: str, spec: dict[str, Any]) -> None:
        from .backends.builtin import BuiltinBackend

        path = spec.get("transcript_path")
        if path is not None:  # the transcript is written here: the server's loop need not relay it
            from .secrets import Redactor
            from .store import append_event

            redactor = spec.get("redactor") or Redactor()  # the session store's

            def record(event: dict[str, Any]) -> None:
                append_event(path, event, redactor)
        else:

            def record(event: dict[str, Any]) -> None:
                self.emit({"id": run_id, "t": "record", "event": event})

        def progress(message: str, steps: int, cost: float) -> None:
            self.emit(
                {"id": run_id, "t": "progress", "message": message, "steps": steps, "cost": cost}
            )

        try:
            o = await BuiltinBackend().run(AgentContext(**spec, record=record, progress=progress))
        except asyncio.CancelledError:
            self.emit({"id": run_id, "t": "cancelled"})
        except AgentError as exc:
            self.emit(
                {
                    "id": run_id,
                    "t": "error",
                    "kind": type(exc).__name__,
                    "message": str(exc),
                    "steps": exc.steps,
                    "cost_usd": exc.cost_usd,
                }
            )
        except Exception as exc:  # a bug in the agent must end its session, not the host
            log.exception("run %s", run_id)
            self.emit(
                {
                    "id": run_id,
                    "t": "error",
                    "message": f"the built-in agent failed: {exc!r}",
                    "steps": 0,
                    "cost_usd": 0.0,
                }
            )
        else:
            self.emit(
                {
                    "id": run_id,
                    "t": "done",
                    "summary": o.summary,
                    "steps": o.steps,
                    "cost_usd": o.cost_usd,
                    "messages": o.messages,
                }
            )
        finally:
            self.tasks.pop(run_id, None)


def main() -> int:
    # stdout is the wire: keep a private copy and point fd 1 (litellm prints) at stderr.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    background()  # the agents and every command they run yield the CPU to the editor
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s handoff-agent-host %(name)s: %(message)s",
    )
    level = os.environ.get("HANDOFF_LOG_LEVEL", "INFO").upper()
    logging.getLogger("handoff").setLevel(
        level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO"
    )
    try:
        asyncio.run(_Host(out).serve())
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    # Threads still waiting on a model request must not keep a finished host alive.
    os._exit(0)


if __name__ == "__main__":
    main()
