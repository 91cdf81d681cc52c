"""Command agents of the benchmarks (docs/DESIGN.md "command" contract), written as small scripts.

- ``marker``: records the wall-clock time (ns) it started and exits: the handoff-cost probe.
- ``writer``: keeps rewriting files in its worktree and printing progress until a stop file exists.
- ``editor``: changes, creates and deletes the files a JSON spec lists (the apply benchmark).
- ``quick``: writes one file and exits (the scale benchmark).
- ``bump``: appends the time to one file and exits: every run, a follow-up's too, changes the
  result (the daemon benchmark).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

WRITER = """
import os, sys, time, pathlib
stop, log = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
sid = os.environ["HANDOFF_SESSION_ID"]
log.mkdir(parents=True, exist_ok=True)
(log / (sid + ".start")).write_text(str(time.time_ns()))
out = pathlib.Path("gen")
out.mkdir(exist_ok=True)
chunk = "".join("line %d of a file an agent keeps rewriting\\n" % i for i in range(50))
i, deadline = 0, time.time() + 900
while not stop.exists() and time.time() < deadline:
    (out / ("w%02d.txt" % (i % 40))).write_text("%d\\n" % i + chunk)
    if i % 5 == 0:
        print("step", i, "wrote", "w%02d.txt" % (i % 40), flush=True)
    i += 1
    time.sleep(0.01)
print("wrote", i, "files")
"""

EDITOR = """
import json, os, sys, pathlib
spec = json.loads(pathlib.Path(sys.argv[1]).read_text())
for rel in spec["modify"]:
    p = pathlib.Path(rel)
    lines = p.read_text().splitlines(keepends=True)
    mid = len(lines) // 2
    lines[mid] = "# changed by the agent\\n" + lines[mid].replace("return x", "return -x")
    lines.append("\\n# the agent was here\\n")
    p.write_text("".join(lines))
for rel in spec["create"]:
    p = pathlib.Path(rel)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join("def made_%d():\\n    return %d\\n\\n" % (i, i) for i in range(40)))
for rel in spec["delete"]:
    os.remove(rel)
print("changed", len(spec["modify"]) + len(spec["create"]) + len(spec["delete"]), "files")
"""


def _script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(body)
    return path


def marker(log: Path) -> list[str]:
    log.mkdir(parents=True, exist_ok=True)
    return ["/bin/sh", "-c", f'date +%s%N > "{log}/$HANDOFF_SESSION_ID.start"; echo started']


def writer(folder: Path, stop: Path, log: Path) -> list[str]:
    return [sys.executable, str(_script(folder, "writer", WRITER)), str(stop), str(log)]


def editor(folder: Path, modify: list[str], create: list[str], delete: list[str]) -> list[str]:
    spec = folder / "editor-spec.json"
    folder.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({"modify": modify, "create": create, "delete": delete}))
    return [sys.executable, str(_script(folder, "editor", EDITOR)), str(spec)]


def quick() -> list[str]:
    return ["/bin/sh", "-c", 'echo "$HANDOFF_SESSION_ID" > handoff-result.txt; echo done']


def bump() -> list[str]:
    return ["/bin/sh", "-c", "date +%s%N >> handoff-result.txt; echo bumped"]
