"""Command agents: any CLI run in the worktree (aider, ``claude -p``, ``codex exec``...).

Contract (docs/DESIGN.md): argv run with cwd = the worktree and stdin closed; ``{task_file}`` and
``{task}`` in argv are replaced; the environment gets ``HANDOFF_TASK``, ``HANDOFF_TASK_FILE``,
``HANDOFF_SESSION_ID``, ``HANDOFF_FILE`` and ``HANDOFF_RANGE``. Exit 0 means done, the last
non-empty stdout line is the summary, the changes left in the worktree are the result.

Command agents are programs the developer chose: they are not sandboxed and run with the
developer's rights. Their environment is scrubbed all the same: credentials (names matching
KEY, TOKEN, SECRET, PASSWORD, CREDENTIAL; HANDOFF_API_KEY, SSH_AUTH_SOCK) and variables that
would point git at another repository are left out, unless ``agents.<name>.passEnv`` names them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import anyio

from ..brief import range_label
from ..processes import background
from ..sandbox import agent_env
from .base import AgentContext, AgentError, LimitReached, Outcome

OUTPUT_CAP = 64 * 1024  # bytes of each stream kept (head and tail)


class _Capped:
    """Keeps the head and the tail of a stream, so huge output costs little memory."""

    def __init__(self, cap: int = OUTPUT_CAP) -> None:
        self.cap = cap
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.cap // 2 - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > self.cap // 2:
            cut = len(self.tail) - self.cap // 2
            self.dropped += cut
            del self.tail[:cut]

    def text(self) -> str:
        mid = f"\n[... {self.dropped} bytes left out ...]\n" if self.dropped else ""
        return (bytes(self.head).decode("utf-8", "replace") + mid
                + bytes(self.tail).decode("utf-8", "replace"))


def _exit_description(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (it crashed or something stopped it)"
    return f"exited with code {code}"


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class CommandBackend:
    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv

    def _argv(self, ctx: AgentContext) -> list[str]:
        return [
            a.replace("{task_file}", str(ctx.brief_path)).replace("{task}", ctx.instruction)
            for a in self.argv
        ]

    def _env(self, ctx: AgentContext) -> dict[str, str]:
        spec = ctx.config.agents.get(self.name)
        return agent_env(os.environ if ctx.env is None else ctx.env, spec.passEnv if spec else (), {
            "HANDOFF_TASK": ctx.instruction,
            "HANDOFF_TASK_FILE": str(ctx.brief_path),
            "HANDOFF_SESSION_ID": ctx.session_id,
            "HANDOFF_FILE": ctx.file or "",
            "HANDOFF_RANGE": range_label(ctx.range),
        })

    async def run(self, ctx: AgentContext) -> Outcome:
        argv = self._argv(ctx)
        ctx.record({"type": "command", "argv": argv})
        ctx.progress(f"running {os.path.basename(argv[0])}", 0, 0.0)
        out, err = _Capped(), _Capped()
        started = time.monotonic()
        try:
            proc = await anyio.open_process(
                argv,
                cwd=ctx.worktree,
                env=self._env(ctx),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise AgentError(f"agent `{self.name}` could not start: {exc}") from exc
        background(proc.pid)  # before it has started anything of its own
        ctx.started(proc.pid)

        async def pump(stream, sink: _Capped) -> None:
            async for chunk in stream:
                sink.add(chunk)

        try:
            with anyio.fail_after(ctx.config.timeoutS):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(pump, proc.stdout, out)
                    tg.start_soon(pump, proc.stderr, err)
                    await proc.wait()
        except TimeoutError:
            raise LimitReached(
                f"time limit reached (timeoutS = {ctx.config.timeoutS:g}); agent `{self.name}` stopped"
            ) from None
        finally:
            # Whatever happened (cancel, timeout, normal exit), nothing of it survives.
            kill_group(proc.pid)
            with anyio.CancelScope(shield=True):
                if proc.returncode is None:
                    await proc.wait()
                ctx.record(
                    {
                        "type": "command_exit",
                        "code": proc.returncode,
                        "seconds": round(time.monotonic() - started, 3),
                        "stdout": out.text(),
                        "stderr": err.text(),
                    }
                )
        if proc.returncode != 0:
            tail = "\n".join(err.text().strip().splitlines()[-15:]) or "(no stderr)"
            raise AgentError(f"agent `{self.name}` {_exit_description(proc.returncode)}:\n{tail}")
        lines = [line.strip() for line in out.text().splitlines() if line.strip()]
        summary = lines[-1] if lines else f"agent `{self.name}` finished"
        return Outcome(summary=summary, steps=1)
