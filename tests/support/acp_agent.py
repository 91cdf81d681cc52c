"""A scripted ACP agent built on the ``agent-client-protocol`` SDK, run as a real process.

``python acp_agent.py MODE LOG`` speaks ACP on stdio. Every prompt it gets is appended to LOG
(one JSON line: session, text, and what happened). Modes:

- ``edit``: a two-entry plan; reads ``app.py`` through ``fs/read_text_file``; asks permission
  to edit it; when allowed, writes it through ``fs/write_text_file`` (``return a + b`` becomes
  ``return a + b  # via acp``); two tool calls; ``usage_update`` with a cost of 0.0123 USD.
  A second prompt in the same session appends ``# follow-up N`` to ``app.py``.
- ``disk``: writes ``notes.txt`` straight to disk (cwd = the worktree), no fs/* at all.
- ``escape``: tries ``fs/write_text_file`` on ESCAPE (an absolute path outside the worktree)
  and reports what the client said.
- ``terminal``: through ``terminal/create``, makes ``made.txt``, tries to write ESCAPE, prints
  ``out``; reports the output.
- ``hang``: starts a child ``sleep`` (its pid in LOG) and waits for ``session/cancel``.
- ``deaf``: like ``hang`` but ignores ``session/cancel`` and SIGTERM.
- ``nologin``: prints ``Not logged in`` on stderr and exits 2 before ``initialize``.
- ``crash``: prints ``Not logged in`` on stderr and exits 1 during the prompt.
- ``ask``: like ``edit``; the permission question waits for the developer.
- ``loadable``: like ``edit``, and offers ``session/load``: its sessions are kept in LOG.state,
  and loading one replays its history as ``session/update`` messages.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from acp import (
    PROTOCOL_VERSION,
    Agent,
    plan_entry,
    run_agent,
    start_tool_call,
    update_agent_message_text,
    update_plan,
    update_tool_call,
)
from acp.schema import (
    AgentCapabilities,
    Cost,
    InitializeResponse,
    LoadSessionResponse,
    NewSessionResponse,
    PermissionOption,
    PromptResponse,
    ToolCallLocation,
    ToolCallUpdate,
    UsageUpdate,
)

MODE = sys.argv[1]
LOG = Path(sys.argv[2])
STATE = Path(str(LOG) + ".state")
ESCAPE = os.environ.get("ACP_TEST_ESCAPE", "/tmp/handoff-acp-escape.txt")


def log(**event: Any) -> None:
    with open(LOG, "a") as f:
        f.write(json.dumps(event) + "\n")


class ScriptedAgent(Agent):
    def __init__(self) -> None:
        self.conn: Any = None
        self.sessions: dict[str, dict[str, Any]] = {}
        self.cancelled: dict[str, asyncio.Event] = {}

    def on_connect(self, conn: Any) -> None:
        self.conn = conn

    async def initialize(
        self,
        protocol_version: int,
        client_capabilities: Any = None,
        client_info: Any = None,
        **kwargs: Any,
    ) -> InitializeResponse:
        log(
            event="initialize",
            capabilities=client_capabilities.model_dump(by_alias=True, exclude_none=True)
            if client_capabilities
            else None,
            client=client_info.name if client_info else None,
        )
        return InitializeResponse(
            protocol_version=PROTOCOL_VERSION,
            agent_capabilities=AgentCapabilities(load_session=MODE == "loadable"),
        )

    async def new_session(
        self, cwd: str, mcp_servers: Any = None, **kwargs: Any
    ) -> NewSessionResponse:
        sid = f"s{len(self.sessions) + 1}"
        self.sessions[sid] = {"cwd": cwd, "prompts": 0}
        log(event="new_session", cwd=cwd, session=sid, pid=os.getpid(), pgid=os.getpgid(0))
        return NewSessionResponse(session_id=sid)

    async def load_session(
        self, cwd: str, session_id: str, **kwargs: Any
    ) -> LoadSessionResponse | None:
        kept = json.loads(STATE.read_text()) if STATE.exists() else {}
        log(event="load_session", session=session_id, known=session_id in kept, pid=os.getpid())
        if session_id not in kept:
            from acp import RequestError

            raise RequestError.resource_not_found(session_id)
        self.sessions[session_id] = kept[session_id]
        await self.say(session_id, "(replayed) Marked add() as checked.")
        return LoadSessionResponse()

    def keep(self) -> None:
        STATE.write_text(json.dumps(self.sessions))

    async def cancel(self, session_id: str, **kwargs: Any) -> None:
        log(event="cancel", session=session_id)
        if MODE != "deaf":
            self.cancelled.setdefault(session_id, asyncio.Event()).set()

    async def say(self, sid: str, text: str) -> None:
        await self.conn.session_update(session_id=sid, update=update_agent_message_text(text))

    async def prompt(self, prompt: list[Any], session_id: str, **kwargs: Any) -> PromptResponse:
        sid = session_id
        state = self.sessions[sid]
        state["prompts"] += 1
        text = "".join(getattr(b, "text", "") for b in prompt)
        log(event="prompt", session=sid, n=state["prompts"], text=text)
        cwd = Path(state["cwd"])
        self.keep()
        if MODE in ("edit", "ask", "loadable"):
            return await self.edit(sid, cwd, state["prompts"])
        if MODE == "disk":
            (cwd / "notes.txt").write_text("written straight to disk\n")
            await self.say(sid, "wrote notes.txt myself")
            return PromptResponse(stop_reason="end_turn")
        if MODE == "escape":
            try:
                await self.conn.write_text_file(session_id=sid, path=ESCAPE, content="escaped\n")
                outcome = "written"
            except Exception as exc:  # the client's refusal comes back as a JSON-RPC error
                outcome = f"refused: {exc} {getattr(exc, 'data', '')}"
            try:
                await self.conn.write_text_file(
                    session_id=sid, path=str(cwd / ".git" / "config"), content="[core]\n"
                )
                git_outcome = "written"
            except Exception as exc:
                git_outcome = f"refused: {exc}"
            log(event="escape", outcome=outcome, git=git_outcome)
            await self.say(sid, f"escape {outcome.split(':')[0]}")
            return PromptResponse(stop_reason="end_turn")
        if MODE == "terminal":
            await self.conn.session_update(
                session_id=sid,
                update=start_tool_call("t1", "Run a command", kind="execute", status="in_progress"),
            )
            term = await self.conn.create_terminal(
                session_id=sid,
                command="sh",
                args=[
                    "-c",
                    'echo made > made.txt; (echo x > "$0") 2>/dev/null || echo outside-refused; echo out',
                    ESCAPE,
                ],
            )
            exit_ = await self.conn.wait_for_terminal_exit(
                session_id=sid, terminal_id=term.terminal_id
            )
            out = await self.conn.terminal_output(session_id=sid, terminal_id=term.terminal_id)
            await self.conn.release_terminal(session_id=sid, terminal_id=term.terminal_id)
            log(event="terminal", exit=exit_.exit_code, output=out.output)
            await self.conn.session_update(
                session_id=sid, update=update_tool_call("t1", status="completed")
            )
            await self.say(sid, f"command exited {exit_.exit_code}")
            return PromptResponse(stop_reason="end_turn")
        if MODE in ("hang", "deaf"):
            if MODE == "deaf":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            child = subprocess.Popen(["sleep", "1000"])
            log(event="child", pid=child.pid)
            await self.conn.session_update(
                session_id=sid,
                update=start_tool_call(
                    "w1", "Think for a long time", kind="think", status="in_progress"
                ),
            )
            await self.cancelled.setdefault(sid, asyncio.Event()).wait()
            child.kill()
            return PromptResponse(stop_reason="cancelled")
        if MODE == "crash":
            print("Error: Not logged in. Run /login", file=sys.stderr, flush=True)
            os._exit(1)
        raise ValueError(MODE)

    async def edit(self, sid: str, cwd: Path, n: int) -> PromptResponse:
        path = str(cwd / "app.py")
        if n > 1:  # a follow-up in the same session: the agent remembers the file
            content = (await self.conn.read_text_file(session_id=sid, path=path)).content
            await self.conn.write_text_file(
                session_id=sid, path=path, content=content + f"# follow-up {n}\n"
            )
            await self.conn.session_update(
                session_id=sid,
                update=start_tool_call(
                    f"f{n}",
                    "Append a note",
                    kind="edit",
                    status="completed",
                    locations=[ToolCallLocation(path=path)],
                ),
            )
            await self.say(sid, f"follow-up {n} done")
            return PromptResponse(stop_reason="end_turn")
        plan = [plan_entry("Read app.py"), plan_entry("Edit add()")]
        await self.conn.session_update(session_id=sid, update=update_plan(plan))
        await self.conn.session_update(
            session_id=sid,
            update=start_tool_call(
                "c1",
                "Read app.py",
                kind="read",
                status="in_progress",
                locations=[ToolCallLocation(path=path)],
            ),
        )
        content = (await self.conn.read_text_file(session_id=sid, path=path)).content
        await self.conn.session_update(
            session_id=sid, update=update_tool_call("c1", status="completed")
        )
        plan[0] = plan_entry("Read app.py", status="completed")
        await self.conn.session_update(session_id=sid, update=update_plan(plan))
        await self.conn.session_update(
            session_id=sid,
            update=start_tool_call(
                "c2",
                "Edit app.py",
                kind="edit",
                status="pending",
                locations=[ToolCallLocation(path=path)],
            ),
        )
        await self.conn.session_update(
            session_id=sid,
            update=UsageUpdate(
                session_update="usage_update",
                used=1200,
                size=200000,
                cost=Cost(amount=0.0123, currency="USD"),
            ),
        )
        answer = await self.conn.request_permission(
            session_id=sid,
            tool_call=ToolCallUpdate(
                tool_call_id="c2",
                title="Edit app.py",
                kind="edit",
                locations=[ToolCallLocation(path=path)],
            ),
            options=[
                PermissionOption(option_id="yes", name="Allow", kind="allow_once"),
                PermissionOption(option_id="always", name="Always allow", kind="allow_always"),
                PermissionOption(option_id="no", name="Reject", kind="reject_once"),
            ],
        )
        chosen = getattr(answer.outcome, "option_id", None)
        log(event="permission", answer=chosen)
        if chosen not in ("yes", "always"):
            await self.conn.session_update(
                session_id=sid, update=update_tool_call("c2", status="failed")
            )
            await self.say(sid, "permission rejected; nothing changed")
            return PromptResponse(stop_reason="end_turn")
        await self.conn.write_text_file(
            session_id=sid,
            path=path,
            content=content.replace("return a + b", "return a + b  # via acp"),
        )
        await self.conn.session_update(
            session_id=sid, update=update_tool_call("c2", status="completed")
        )
        plan[1] = plan_entry("Edit add()", status="completed")
        await self.conn.session_update(session_id=sid, update=update_plan(plan))
        await self.say(sid, "Marked add() ")
        await self.say(sid, "as checked.")
        return PromptResponse(stop_reason="end_turn")


if __name__ == "__main__":
    if MODE == "nologin":  # dies before it answers initialize, as an agent without credentials does
        print("\x1b[31mError:\x1b[0m Not logged in. Run /login", file=sys.stderr, flush=True)
        sys.exit(2)
    asyncio.run(run_agent(ScriptedAgent()))
