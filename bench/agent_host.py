"""What-if prototype (``BENCH_PATCHES=agent-process``): the built-in agent in a child process.

The server keeps the session; the child runs the very same ``BuiltinBackend`` loop (litellm and
all) and streams what it records and reports back as JSON lines, so the language server's
process never imports or runs litellm. The parent half replaces ``BuiltinBackend.run``; the child
half is ``python -m bench.agent_host`` reading a pickled context from stdin. A sketch to measure
the idea, not production code (no resume of a running child, crude error mapping).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any


def install() -> None:
    import anyio

    from handoff.agent.backends import builtin
    from handoff.agent.backends.base import AgentError, LimitReached, Outcome
    from handoff.agent.backends.command import kill_group

    async def run(self, ctx) -> Outcome:
        spec = {k: getattr(ctx, k) for k in ("session_id", "worktree", "instruction", "brief", "brief_path",
                                              "config", "file", "range", "history")}
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = await anyio.open_process([sys.executable, "-m", "bench.agent_host"], cwd=root, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
                                        start_new_session=True)
        result: dict[str, Any] | None = None
        try:
            await proc.stdin.send(pickle.dumps(spec))
            await proc.stdin.aclose()
            buf = b""
            async for chunk in proc.stdout:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    event = json.loads(line)
                    kind = event.pop("t")
                    if kind == "record":
                        ctx.record(event["event"])
                    elif kind == "progress":
                        ctx.progress(event["message"], event["steps"], event["cost"])
                    else:
                        result = {"t": kind, **event}
            await proc.wait()
        finally:
            kill_group(proc.pid)
            with anyio.CancelScope(shield=True):
                if proc.returncode is None:
                    await proc.wait()
        if result is None:
            raise AgentError(f"the agent process ended without a result (exit code {proc.returncode})")
        if result["t"] == "error":
            cls = LimitReached if result["kind"] == "LimitReached" else AgentError
            raise cls(result["message"], steps=result["steps"], cost_usd=result["cost_usd"])
        return Outcome(result["summary"], result["steps"], result["cost_usd"], result["messages"])

    builtin.BuiltinBackend.run = run


def main() -> int:
    import anyio

    from handoff.agent.backends.base import AgentContext, AgentError
    from handoff.agent.backends.builtin import BuiltinBackend

    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints (litellm's) go to stderr, never into the event stream
    sys.stdout = sys.stderr
    spec = pickle.loads(sys.stdin.buffer.read())

    def emit(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj, default=str) + "\n")

    ctx = AgentContext(**spec, record=lambda e: emit({"t": "record", "event": e}),
                       progress=lambda m, s, c: emit({"t": "progress", "message": m, "steps": s, "cost": c}))

    async def go() -> None:
        try:
            o = await BuiltinBackend().run(ctx)
        except AgentError as exc:
            emit({"t": "error", "kind": type(exc).__name__, "message": str(exc), "steps": exc.steps,
                  "cost_usd": exc.cost_usd})
            return
        emit({"t": "done", "summary": o.summary, "steps": o.steps, "cost_usd": o.cost_usd, "messages": o.messages})

    anyio.run(go)
    return 0


if __name__ == "__main__":
    sys.exit(main())
