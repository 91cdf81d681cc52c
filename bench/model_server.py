"""A slow scripted model for the load benchmark: Handoff's offline model (handoff.offline_model)
on 127.0.0.1, answering each conversation by its own length instead of from one shared queue.

Every reply waits ``--delay`` seconds (a model thinking), then asks for one more ``write_file`` in
the agent's worktree, until ``--stop-file`` exists; then it answers ``finish``. So any number of
built-in agents keep working, step after step, for exactly as long as the benchmark wants.

    python -m bench.model_server --port-file PORT --stop-file STOP [--delay 0.5]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from handoff.offline_model import ScriptedModel, tool_call

CONTENT = "".join(f"def generated_{i}(x):\n    return x + {i}\n\n" for i in range(60))  # ~1.7 KB


class SlowModel(ScriptedModel):
    def __init__(self, *, delay_s: float, stop_file: Path, port: int = 0) -> None:
        super().__init__(port=port)
        self.delay_s = delay_s
        self.stop_file = stop_file

    def next_item(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self._count += 1
            n = self._count
        time.sleep(self.delay_s)
        step = sum(1 for m in body.get("messages") or [] if m.get("role") == "assistant")
        if self.stop_file.exists():
            return n, tool_call("finish", {"summary": f"stopped after {step} steps"})
        return n, tool_call("write_file", {"path": f"gen/step_{step:04d}.py", "content": CONTENT})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port-file", type=Path, required=True)
    p.add_argument("--stop-file", type=Path, required=True)
    p.add_argument("--delay", type=float, default=0.5)
    args = p.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = SlowModel(delay_s=args.delay, stop_file=args.stop_file)
    with server:
        tmp = args.port_file.with_name(args.port_file.name + ".tmp")
        tmp.write_text(str(server.port))
        os.replace(tmp, args.port_file)
        stop.wait()
        print(f"model server: {server._count} requests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
