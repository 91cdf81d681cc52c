"""ACP agents: an Agent Client Protocol (v1) agent process, with Handoff as its client.

The agent is started with cwd = the worktree, in a process group of its own, with the same
scrubbed environment as a command agent. ``initialize`` offers fs read/write and terminals
(:mod:`.acp_client` confines them), ``session/new`` gets cwd = the worktree and
``session/prompt`` the whole brief. ``session/update`` feeds the transcript, the progress text
(the current tool call's title, plan entries done/total), ``steps`` (tool calls) and
``costUsd`` (``usage_update``). Cancel sends ``session/cancel``, waits :data:`CANCEL_GRACE_S`
and then kills the whole process group, whether the agent listened or not.

Follow-ups continue the same ACP session while its process lives (it is kept
:data:`IDLE_S` after a run), else ``session/load`` where the agent offers it, else a new
session whose prompt carries the earlier turns' summary.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import time
from typing import Any

import anyio
from acp import PROTOCOL_VERSION, RequestError, text_block
from acp.client.connection import ClientSideConnection
from acp.schema import ClientCapabilities, FileSystemCapabilities, Implementation

from ..capped import HeadTail
from ..processes import kill_group
from .acp_client import HandoffClient
from .base import AgentContext, AgentError, LimitReached, Outcome
from .command import (
    OUTPUT_CAP,
    _exit_description,
    agent_environment,
    hide_env_secrets,
    strip_ansi,
)

CANCEL_GRACE_S = 3.0  # after session/cancel, before the process group is killed
IDLE_S = 600.0  # a finished agent process is kept this long for follow-ups
STREAM_LIMIT = 50 * 1024 * 1024  # longest JSON-RPC line read from the agent
TEXT_CAP = 4000  # characters of one tool call's content kept in the transcript
AUTH_REQUIRED = -32000  # the JSON-RPC error code of "authentication required"


def _dump(model: Any) -> Any:
    return (
        model.model_dump(mode="json", by_alias=True, exclude_none=True)
        if hasattr(model, "model_dump")
        else model
    )


def _cap(o: Any) -> Any:
    if isinstance(o, str):
        return (
            o if len(o) <= TEXT_CAP else o[:TEXT_CAP] + f"[... {len(o) - TEXT_CAP} more characters]"
        )
    if isinstance(o, dict):
        return {k: _cap(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_cap(v) for v in o]
    return o


class _Run:
    """What one run (one prompt) of the agent reports, turned into Handoff's terms."""

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.tool_calls: dict[str, str] = {}  # id -> title
        self.plan: tuple[int, int] | None = None  # (done, total)
        self.cost = 0.0
        self.title = ""
        self.message: list[str] = []  # the agent's text since its last tool call
        self.thought: list[str] = []
        self.replaying = False  # session/load replays history: not this run's work
        self.over_cost = asyncio.Event()  # the agent reported a cost past maxCostUsd

    def flush(self) -> None:
        if self.thought:
            self.ctx.record({"type": "acp_thought", "text": "".join(self.thought)})
            self.thought = []
        if self.message:
            self.ctx.record({"type": "acp_message", "text": "".join(self.message)})

    def _progress(self) -> None:
        text = self.title or "working"
        if self.plan:
            text += f" (plan {self.plan[0]}/{self.plan[1]} done)"
        self.ctx.progress(text, len(self.tool_calls), self.cost)

    def update(self, update: Any) -> None:
        if self.replaying:
            return
        kind = getattr(update, "session_update", None)
        if kind in ("agent_message_chunk", "agent_thought_chunk"):
            text = getattr(update.content, "text", None)
            if isinstance(text, str):
                (self.message if kind == "agent_message_chunk" else self.thought).append(text)
            return
        if kind in ("tool_call", "tool_call_update", "plan"):
            self.flush()
            self.message = []
        if kind == "tool_call":
            self.tool_calls[update.tool_call_id] = update.title
            self.title = update.title
            self.ctx.record({"type": "acp_tool_call", **_cap(_dump(update))})
            self._progress()
        elif kind == "tool_call_update":
            if update.title:
                self.tool_calls[update.tool_call_id] = update.title
                self.title = update.title
            self.tool_calls.setdefault(update.tool_call_id, update.title or "")
            self.ctx.record({"type": "acp_tool_call_update", **_cap(_dump(update))})
            self._progress()
        elif kind == "plan":
            entries = update.entries or []
            self.plan = (sum(1 for e in entries if e.status == "completed"), len(entries))
            self.ctx.record({"type": "acp_plan", "entries": [_dump(e) for e in entries]})
            self._progress()
        elif kind == "usage_update":
            cost = update.cost
            if cost is not None and (cost.currency or "").upper() == "USD":
                self.cost = float(cost.amount)
                if self.cost > self.ctx.config.maxCostUsd:
                    self.over_cost.set()
            self.ctx.record({"type": "acp_usage", **_dump(update)})
            self._progress()
        elif kind is not None:
            self.ctx.record({"type": "acp_update", "sessionUpdate": kind})

    def summary(self, name: str) -> str:
        text = "".join(self.message).strip()
        if not text:
            return f"agent `{name}` finished"
        return text if len(text) <= 2000 else text[:1999] + "…"


class _Live:
    """One agent process and its connection; kept between the runs of one Handoff session."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, client: HandoffClient) -> None:
        self.name, self.proc, self.client = name, proc, client
        self.stderr = HeadTail(OUTPUT_CAP)
        self.run: _Run | None = None
        self.conn: ClientSideConnection | None = None
        self.init: Any = None
        self.acp_session: str | None = None
        self.idle: asyncio.TimerHandle | None = None
        self.pump: asyncio.Task[None] | None = None
        self.env: dict[str, str] = {}

    def alive(self) -> bool:
        return self.proc.returncode is None

    def tail(self) -> str:
        lines = strip_ansi(self.stderr.text()).strip().splitlines()
        return "\n".join(lines[-15:]) or "(no stderr)"

    async def kill(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        kill_group(self.proc.pid)
        with anyio.CancelScope(shield=True):
            if self.proc.returncode is None:
                await self.proc.wait()
            if self.conn is not None:
                with contextlib.suppress(Exception):
                    await self.conn.close()
            if self.pump is not None:
                with anyio.move_on_after(2):
                    with contextlib.suppress(Exception):
                        await self.pump
            await anyio.to_thread.run_sync(self.client.close)
        _GROUPS.discard(self.proc.pid)


_LIVE: dict[str, _Live] = {}  # handoff session id -> its agent process, between runs
_GROUPS: set[int] = set()  # every agent process group started and not yet ended


@atexit.register
def _kill_all() -> None:  # pragma: no cover - at interpreter exit
    for pid in list(_GROUPS):
        kill_group(pid)


async def release(session_id: str) -> None:
    """End the agent process kept for ``session_id`` (applied, discarded, shutting down)."""
    live = _LIVE.pop(session_id, None)
    if live is not None:
        await live.kill()


def forget(session_id: str) -> None:
    """:func:`release` from blocking code: the process group is killed, the rest ends with it."""
    live = _LIVE.pop(session_id, None)
    if live is not None:
        kill_group(live.proc.pid)
        _GROUPS.discard(live.proc.pid)


def _history(ctx: AgentContext) -> dict[str, Any]:
    for m in ctx.history:
        if isinstance(m, dict) and m.get("type") == "acp":
            return m
    return {}


class AcpBackend:
    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self._starting: _Live | None = None  # a process still being initialized

    async def _start(self, ctx: AgentContext) -> _Live:
        cfg = ctx.config
        spec = cfg.agent_spec(self.name)
        hide_env_secrets(ctx, spec)
        env, dropped = agent_environment(
            spec, {"HANDOFF_SESSION_ID": ctx.session_id}, ctx.env, ctx.worktree
        )
        ctx.record({"type": "acp_start", "argv": self.argv, "envDropped": dropped})
        policy = spec.permissions if spec and spec.permissions else cfg.permissions
        holder: dict[str, _Live] = {}

        def current() -> _Run | None:
            live = holder.get("live")
            return live.run if live else None

        async def ask(question: dict[str, Any]) -> str:
            run = current()
            if run is None or run.ctx.ask is None:
                return ""
            return await run.ctx.ask(question)

        def on_update(update: Any) -> None:
            run = current()
            if run is not None:
                run.update(update)

        def record(event: dict[str, Any]) -> None:
            run = current()
            if run is not None:
                run.ctx.record(event)

        client = HandoffClient(
            ctx.worktree,
            policy=policy,
            command_policy=cfg.commandPolicy,
            pass_env=cfg.passEnv,
            timeout_s=cfg.timeoutS,
            on_update=on_update,
            record=record,
            ask=ask if policy == "ask" else None,
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=ctx.worktree,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                limit=STREAM_LIMIT,
            )
        except OSError as exc:
            raise AgentError(f"agent `{self.name}` could not start: {exc}") from exc
        from ..processes import background

        background(proc.pid)
        _GROUPS.add(proc.pid)
        ctx.started(proc.pid)
        live = holder["live"] = self._starting = _Live(self.name, proc, client)
        live.env = env

        async def pump() -> None:
            assert proc.stderr is not None
            while chunk := await proc.stderr.read(65536):
                live.stderr.add(chunk)

        live.pump = asyncio.get_running_loop().create_task(pump())
        # HandoffClient answers what Handoff offers its agents; elicitation is not offered (an
        # agent asking for it gets "method not found"), hence not all of acp's Client protocol.
        live.conn = ClientSideConnection(client, proc.stdin, proc.stdout)  # type: ignore[arg-type]
        from ... import __version__

        live.init = await live.conn.initialize(
            protocol_version=PROTOCOL_VERSION,
            client_capabilities=ClientCapabilities(
                fs=FileSystemCapabilities(read_text_file=True, write_text_file=True), terminal=True
            ),
            client_info=Implementation(name="handoff", title="Handoff", version=__version__),
        )
        ctx.record(
            {
                "type": "acp_initialized",
                "agentInfo": _dump(live.init.agent_info),
                "protocolVersion": live.init.protocol_version,
            }
        )
        return live

    async def _session(self, live: _Live, ctx: AgentContext, run: _Run) -> tuple[str, str]:
        """The ACP session to prompt and the prompt's text."""
        assert live.conn is not None
        past = _history(ctx)
        follow_up = bool(past) or live.acp_session is not None
        if live.acp_session is not None:  # the same process: the agent remembers
            return live.acp_session, _follow_up_prompt(ctx)
        caps = live.init.agent_capabilities
        if past.get("sessionId") and caps is not None and caps.load_session:
            run.replaying = True
            try:
                await live.conn.load_session(
                    cwd=str(ctx.worktree), session_id=past["sessionId"], mcp_servers=[]
                )
                ctx.record({"type": "acp_session", "sessionId": past["sessionId"], "how": "loaded"})
                live.acp_session = past["sessionId"]
                return live.acp_session, _follow_up_prompt(ctx)
            except RequestError as exc:
                ctx.record({"type": "acp_session_load_failed", "error": str(exc)})
            finally:
                run.replaying = False
        try:
            new = await live.conn.new_session(cwd=str(ctx.worktree), mcp_servers=[])
        except RequestError as exc:
            if exc.code != AUTH_REQUIRED or not await self._authenticate(live, ctx):
                raise
            new = await live.conn.new_session(cwd=str(ctx.worktree), mcp_servers=[])
        live.acp_session = new.session_id
        ctx.record({"type": "acp_session", "sessionId": new.session_id, "how": "new"})
        return new.session_id, (_resumed_prompt(ctx, past) if follow_up else ctx.brief)

    async def _authenticate(self, live: _Live, ctx: AgentContext) -> bool:
        """Answer "authentication required" with the first method the agent offers whose
        variables its environment has (e.g. codex-acp's OPENAI_API_KEY); False if none."""
        assert live.conn is not None
        for method in live.init.auth_methods or []:
            names = [v.name for v in getattr(method, "vars", None) or []]
            if (
                getattr(method, "type", None) == "env_var"
                and names
                and all(live.env.get(n) for n in names)
            ):
                await live.conn.authenticate(method_id=method.id)
                ctx.record({"type": "acp_authenticated", "method": method.id})
                return True
        return False

    async def run(self, ctx: AgentContext) -> Outcome:
        run = _Run(ctx)
        live = _LIVE.pop(ctx.session_id, None)
        if live is not None:
            if live.idle is not None:
                live.idle.cancel()
                live.idle = None
            if not live.alive():
                await live.kill()
                live = None
        ctx.progress(f"starting {os.path.basename(self.argv[0])}", 0, 0.0)
        started = time.monotonic()
        prompt_task: asyncio.Future[Any] | None = None
        acp_sid: str | None = None
        ok = False
        try:
            with anyio.fail_after(ctx.config.timeoutS):
                if live is None:
                    live = await self._start(ctx)
                live.run = run
                acp_sid, text = await self._session(live, ctx, run)
                ctx.record({"type": "acp_prompt", "sessionId": acp_sid, "text": text})
                assert live.conn is not None  # _start made it
                prompt_task = asyncio.ensure_future(
                    live.conn.prompt(session_id=acp_sid, prompt=[text_block(text)])
                )
                limit = asyncio.ensure_future(run.over_cost.wait())
                try:
                    await asyncio.wait({prompt_task, limit}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    limit.cancel()
                if not prompt_task.done():
                    raise LimitReached(
                        f"cost limit reached (maxCostUsd = {ctx.config.maxCostUsd:g}; the agent reported "
                        f"{run.cost:g} USD); agent `{self.name}` stopped",
                        steps=len(run.tool_calls),
                        cost_usd=run.cost,
                    )
                resp = prompt_task.result()
            ok = True
        except TimeoutError:
            raise LimitReached(
                f"time limit reached (timeoutS = {ctx.config.timeoutS:g}); agent `{self.name}` stopped",
                steps=len(run.tool_calls),
                cost_usd=run.cost,
            ) from None
        except ConnectionError:
            lv = live or self._starting
            code = await _exit_code(lv)
            how = _exit_description(code) if code is not None else "closed the connection"
            raise AgentError(
                f"agent `{self.name}` {how}:\n{lv.tail() if lv else '(no stderr)'}",
                steps=len(run.tool_calls),
                cost_usd=run.cost,
            ) from None
        except RequestError as exc:
            lv = live or self._starting
            detail = f" ({_detail(exc.data)})" if exc.data else ""
            raise AgentError(
                f"agent `{self.name}` reported an error: {exc}{detail}\n"
                f"{lv.tail() if lv else ''}".rstrip(),
                steps=len(run.tool_calls),
                cost_usd=run.cost,
            ) from None
        finally:
            run.flush()
            live = live or self._starting  # cancelled or timed out while it started: end it too
            self._starting = None
            if live is not None:
                live.run = None
                with anyio.CancelScope(shield=True):
                    if not ok:
                        await self._stop(live, acp_sid, prompt_task)
                    ctx.record(
                        {
                            "type": "acp_end",
                            "seconds": round(time.monotonic() - started, 3),
                            "stderr": strip_ansi(live.stderr.text())[-TEXT_CAP:],
                            "exitCode": live.proc.returncode,
                        }
                    )
        assert live is not None  # the prompt was answered: it ran
        steps, cost = len(run.tool_calls), run.cost
        reason = resp.stop_reason
        if reason in ("refusal", "cancelled"):
            await live.kill()
            what = "refused the task" if reason == "refusal" else "stopped the turn itself"
            raise AgentError(
                f"agent `{self.name}` {what}: {run.summary(self.name)}", steps=steps, cost_usd=cost
            )
        if reason in ("max_tokens", "max_turn_requests"):
            await live.kill()
            raise LimitReached(
                f"agent `{self.name}` stopped at its own limit ({reason})",
                steps=steps,
                cost_usd=cost,
            )
        self._keep(ctx.session_id, live)
        summary = run.summary(self.name)
        past = _history(ctx)
        turns = [*past.get("turns", []), {"instruction": ctx.instruction, "summary": summary}]
        return Outcome(
            summary=summary,
            steps=steps,
            cost_usd=cost,
            messages=[{"type": "acp", "agent": self.name, "sessionId": acp_sid, "turns": turns}],
        )

    async def _stop(
        self, live: _Live, acp_sid: str | None, prompt_task: asyncio.Future[Any] | None
    ) -> None:
        """session/cancel, a grace period, then the whole process group, listening or not."""
        if acp_sid and live.alive() and live.conn is not None:
            with contextlib.suppress(Exception):
                with anyio.move_on_after(1):
                    await live.conn.cancel(session_id=acp_sid)
            if prompt_task is not None and not prompt_task.done():
                with anyio.move_on_after(CANCEL_GRACE_S):
                    await asyncio.wait({prompt_task})
        if prompt_task is not None and not prompt_task.done():
            prompt_task.cancel()
        await live.kill()

    def _keep(self, session_id: str, live: _Live) -> None:
        if not live.alive():
            return
        _LIVE[session_id] = live
        loop = asyncio.get_running_loop()

        def expire() -> None:
            if _LIVE.get(session_id) is live:
                del _LIVE[session_id]
                live.idle = None
                loop.create_task(live.kill())

        live.idle = loop.call_later(IDLE_S, expire)


async def _exit_code(live: _Live | None) -> int | None:
    if live is None:
        return None
    with anyio.move_on_after(2):
        await live.proc.wait()
    if live.pump is not None:
        with anyio.move_on_after(1):
            with contextlib.suppress(Exception):
                await live.pump
    return live.proc.returncode


def _detail(data: Any) -> str:
    if isinstance(data, dict):
        for key in ("details", "message", "error"):
            value = data.get(key)
            if isinstance(value, str):
                return value
    return str(data)[:500]


def _follow_up_prompt(ctx: AgentContext) -> str:
    return f"Follow-up from the developer, in the same worktree:\n\n{ctx.instruction}"


def _resumed_prompt(ctx: AgentContext, past: dict[str, Any]) -> str:
    lines = [ctx.brief.rstrip(), "", "## Earlier in this session", ""]
    for turn in past.get("turns", []):
        lines.append(f"- Asked: {turn.get('instruction', '')}")
        lines.append(f"  Result: {turn.get('summary', '')}")
    lines += ["", "The worktree holds the work of those turns.", "", "## Now", "", ctx.instruction]
    return "\n".join(lines)
