"""One delegation to a real agent, run inside a network namespace with only loopback.

``python -m tests.support.real_agent_run SPEC.json`` starts the scripted model servers
(tests/support/model_servers.py), sets the variables SPEC names and writes the files it names
(``{url}`` replaced by the servers' address in both), delegates SPEC's instruction in SPEC's repository through a SessionManager,
applies a ready result to the working tree and prints one JSON object: the session as it ended,
what was applied, and the paths the agent requested from the model servers.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from handoff.agent import config as config_mod
from handoff.agent.manager import DelegateRequest, SessionManager
from handoff.agent.session import State

from tests.support.model_servers import ModelServers, Task


async def run(spec: dict) -> dict:
    repo = Path(spec["repo"])
    task = Task(**spec["task"])
    with ModelServers(task) as servers:
        for k, v in spec.get("env", {}).items():
            os.environ[k] = v.replace("{url}", servers.url)
        for name, text in spec.get("files", {}).items():  # e.g. an agent's own config file
            Path(name).parent.mkdir(parents=True, exist_ok=True)
            Path(name).write_text(text.replace("{url}", servers.url))
        cfg, messages = config_mod.load(repo)
        mgr = SessionManager(repo, cfg)
        mgr.load()
        out: dict = {"configMessages": messages}
        try:
            s = mgr.delegate(DelegateRequest(spec["instruction"], file=task.file))
            try:
                s = await asyncio.wait_for(mgr.wait(s.id), spec.get("timeout", 120))
            except TimeoutError:  # what it was doing, for the failure message
                out["timedOut"] = True
                out["transcript"] = mgr.store.read_transcript(s.id)[-8:]
                out["requests"] = [r["path"] for r in servers.requests]
                print(json.dumps(out))
                raise
            out.update(
                state=s.state.value,
                error=s.error,
                summary=s.summary,
                steps=s.steps,
                costUsd=s.costUsd,
                filesChanged=[Path(u).name for u in s.filesChanged],
                diff=mgr.diff(s.id),
            )
            if s.state is State.READY:
                report = mgr.apply_to_disk(s.id)
                out["written"] = report.written
                out["conflicts"] = len(report.conflicts)
            out["transcript"] = [e.get("type") for e in mgr.store.read_transcript(s.id)]
        finally:
            await mgr.close()
        out["requests"] = [r["path"] for r in servers.requests]
        if os.environ.get("REAL_AGENT_DEBUG"):
            Path(os.environ["REAL_AGENT_DEBUG"]).write_text(json.dumps(servers.requests, indent=1))
    return out


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(asyncio.run(run(spec))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
