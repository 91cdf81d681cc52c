"""A scriptable command agent for the LSP tests, and repositories configured to use it.

The agent (``AGENT_SCRIPT``) runs in the session's worktree. It reads a JSON spec; on each run it
records what it saw (task, environment, the content of the files named in ``read``, its pid) to
``<log>/<session>-<run>.json``, waits for the file ``go-<session>`` when configured with ``wait``
(so a test decides when it finishes: :meth:`Agent.release`), then performs the actions of that run and prints its summary as the last line.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.support.agents import trust_repo

AGENT_SCRIPT = textwrap.dedent("""
    import json, os, pathlib, sys, time
    spec = json.loads(pathlib.Path(sys.argv[1]).read_text())
    log = pathlib.Path(spec["log"])
    log.mkdir(parents=True, exist_ok=True)
    sid = os.environ["HANDOFF_SESSION_ID"]
    run = len(list(log.glob(sid + "-*.json")))
    seen = {}
    for name in spec.get("read", []):
        p = pathlib.Path(name)
        seen[name] = p.read_text() if p.exists() else None
    record = {"task": os.environ["HANDOFF_TASK"], "file": os.environ["HANDOFF_FILE"],
              "range": os.environ["HANDOFF_RANGE"], "cwd": os.getcwd(), "pid": os.getpid(),
              "seen": seen, "brief": pathlib.Path(os.environ["HANDOFF_TASK_FILE"]).read_text()}
    tmp = log / f".{sid}-{run}.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, log / f"{sid}-{run}.json")  # readers never see half a record
    wait = spec.get("wait_for", "").replace("{session}", sid)
    if wait:
        deadline = time.time() + spec.get("wait_s", 120)
        while not os.path.exists(wait):
            if time.time() > deadline:
                print("gave up waiting", file=sys.stderr)
                sys.exit(3)
            time.sleep(0.02)
    runs = spec.get("runs") or [[]]
    for action in runs[min(run, len(runs) - 1)]:
        op, args = action[0], action[1:]
        if op == "replace":
            path, old, new = args
            text = pathlib.Path(path).read_text()
            assert old in text, (path, old, text)
            pathlib.Path(path).write_text(text.replace(old, new, 1))
        elif op == "write":
            pathlib.Path(args[0]).parent.mkdir(parents=True, exist_ok=True)
            pathlib.Path(args[0]).write_text(args[1])
        elif op == "delete":
            os.remove(args[0])
        elif op == "rename":
            pathlib.Path(args[1]).parent.mkdir(parents=True, exist_ok=True)
            os.rename(args[0], args[1])
        elif op == "fail":
            print(args[0], file=sys.stderr)
            sys.exit(1)
        elif op == "sleep":
            time.sleep(args[0])
    print("agent working")
    print(spec.get("summary", "done"))
""")


class Agent:
    """The command agent of one test repository: ``configure`` it, then read what it saw."""

    def __init__(self, repo: Path, work: Path) -> None:
        self.repo = repo
        self.work = work
        self.log = work / "agent-log"
        self.spec_path = work / "agent-spec.json"
        self.script = work / "agent.py"

    def configure(
        self,
        *,
        runs: list[list[list[Any]]] | None = None,
        wait: bool = False,
        read: list[str] | None = None,
        summary: str = "done",
        extra_toml: str = "",
    ) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.script.write_text(AGENT_SCRIPT)
        spec = {"log": str(self.log), "runs": runs or [[]], "read": read or [], "summary": summary}
        if wait:
            spec["wait_for"] = str(self.work / "go-{session}")
        self.spec_path.write_text(json.dumps(spec))
        argv = json.dumps(self.argv())
        (self.repo / ".handoff.toml").write_text(
            f'agent = "edit"\n{extra_toml}\n[agents.edit]\ncommand = {argv}\n'
        )
        trust_repo(self.repo)

    def argv(self) -> list[str]:
        return [sys.executable, str(self.script), str(self.spec_path)]

    def release(self, session_id: str) -> None:
        """Let the waiting agent of ``session_id`` go on."""
        (self.work / f"go-{session_id}").write_text("go")

    def runs(self, session_id: str) -> list[dict[str, Any]]:
        found = sorted(
            self.log.glob(f"{session_id}-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1])
        )
        return [json.loads(p.read_text()) for p in found]

    def started(self, session_id: str) -> bool:
        return (self.log / f"{session_id}-0.json").exists()
