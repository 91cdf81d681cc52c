"""Command agents: any CLI run in the worktree (aider, ``claude -p``, ``codex exec``...).

Contract (docs/DESIGN.md): argv run with cwd = the worktree and stdin closed; ``{task_file}`` (the
brief's path), ``{brief}`` (the whole brief's text) and ``{task}`` (the instruction) in argv are
replaced; the environment gets ``HANDOFF_TASK``, ``HANDOFF_TASK_FILE``, ``HANDOFF_SESSION_ID``,
``HANDOFF_FILE`` and ``HANDOFF_RANGE``. Exit 0 means done, the last non-empty stdout line is
the summary, the changes left in the worktree are the result. A failure's message carries the
last lines of stdout and stderr, colour codes stripped.

Command agents are programs the developer chose: they are not sandboxed and run with the
developer's rights. Their environment is scrubbed all the same: credentials (:mod:`..secrets`:
names with a part such as KEY, TOKEN, SECRET, PASSWORD; HANDOFF_API_KEY, SSH_AUTH_SOCK) and
variables that would point git at another repository are left out, unless
``agents.<name>.passEnv`` names them; ``agents.<name>.env`` adds variables. The names left out
are recorded in the transcript (names only).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import anyio
import anyio.abc

from ..brief import range_label
from ..capped import HeadTail
from ..config import AgentSpec
from ..gitenv import AGENT_VARS
from ..processes import background, kill_group
from ..secrets import is_secret_name, scrub
from .base import AgentContext, AgentError, LimitReached, Outcome

OUTPUT_CAP = 64 * 1024  # bytes of each stream kept (head and tail)
ERROR_LINES = 15  # lines of each stream a failure's message shows
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour and cursor codes."""
    return _ANSI.sub("", text).replace("\r\n", "\n")


def agent_environment(
    spec: AgentSpec | None,
    extra: dict[str, str],
    base: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The environment of an external agent and the secret-looking names left out of it:
    ``base`` (the delegating client's; ours when None) without credentials (unless ``passEnv``
    names them) and without variables that redirect git, plus the agent's ``env``, plus
    ``extra``. ``PWD`` is ``cwd`` (the worktree), never the client's folder: agents that take
    their working folder from ``PWD`` (``opencode run`` does) would work in the developer's
    tree."""
    env, dropped = scrub(
        os.environ if base is None else base, spec.passEnv if spec else (), AGENT_VARS
    )
    if spec is not None:
        env.update(spec.env)
    env.update(extra)
    env.pop("OLDPWD", None)
    if cwd is not None:
        env["PWD"] = str(cwd)
    else:
        env.pop("PWD", None)
    return env, dropped


def hide_env_secrets(ctx: AgentContext, spec: AgentSpec | None) -> None:
    """Secret-looking values an agent's ``env`` sets are hidden in records like ours."""
    if spec is not None and ctx.redactor is not None:
        ctx.redactor.add(v for k, v in spec.env.items() if is_secret_name(k))


def _tail(text: str, n: int = ERROR_LINES) -> str:
    return "\n".join(strip_ansi(text).strip().splitlines()[-n:])


def _exit_description(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (it crashed or something stopped it)"
    return f"exited with code {code}"


class CommandBackend:
    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv

    def _argv(self, ctx: AgentContext) -> list[str]:
        subs = {"{task_file}": str(ctx.brief_path), "{brief}": ctx.brief, "{task}": ctx.instruction}
        pattern = re.compile("|".join(re.escape(k) for k in subs))
        return [pattern.sub(lambda m: subs[m.group(0)], a) for a in self.argv]

    def _env(self, ctx: AgentContext) -> tuple[dict[str, str], list[str]]:
        spec = ctx.config.agent_spec(self.name)
        hide_env_secrets(ctx, spec)
        return agent_environment(
            spec,
            {
                "HANDOFF_TASK": ctx.instruction,
                "HANDOFF_TASK_FILE": str(ctx.brief_path),
                "HANDOFF_SESSION_ID": ctx.session_id,
                "HANDOFF_FILE": ctx.file or "",
                "HANDOFF_RANGE": range_label(ctx.range),
            },
            ctx.env,
            ctx.worktree,
        )

    async def run(self, ctx: AgentContext) -> Outcome:
        argv = self._argv(ctx)
        env, dropped = self._env(ctx)
        ctx.record({"type": "command", "argv": argv, "envDropped": dropped})
        ctx.progress(f"running {os.path.basename(argv[0])}", 0, 0.0)
        out, err = HeadTail(OUTPUT_CAP), HeadTail(OUTPUT_CAP)
        started = time.monotonic()
        try:
            proc = await anyio.open_process(
                argv,
                cwd=ctx.worktree,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise AgentError(f"agent `{self.name}` could not start: {exc}") from exc
        background(proc.pid)  # before it has started anything of its own
        ctx.started(proc.pid)

        async def pump(stream: anyio.abc.ByteReceiveStream | None, sink: HeadTail) -> None:
            assert stream is not None  # opened as a pipe
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
        code = await proc.wait()  # it has ended: its exit code
        if code != 0:
            parts = [
                f"{label}:\n{t}"
                for label, t in (("stdout", _tail(out.text())), ("stderr", _tail(err.text())))
                if t
            ]
            shown = "\n".join(parts) or "(no output)"
            raise AgentError(f"agent `{self.name}` {_exit_description(code)}:\n{shown}")
        lines = [line.strip() for line in strip_ansi(out.text()).splitlines() if line.strip()]
        summary = lines[-1] if lines else f"agent `{self.name}` finished"
        return Outcome(summary=summary, steps=1)
