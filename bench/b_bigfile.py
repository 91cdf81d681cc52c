"""6. Big files: a result in a 10 MB and a 449 KiB source file, applied and with one conflict.

The files are generated Python, full of repeated lines (blank lines, ``return``, ``pass``): what
made the old ``difflib`` diff quadratic. The agent (a command agent) changes lines near the
start, the middle and the end and inserts a block; meanwhile the developer changed two other
places (clean case) or also the agent's middle line (one conflict).

In-process, median of a few runs: ``SessionManager.plan`` (three-way merge, and the conflict
mapping into the developer's lines in the conflict case) plus ``server.edits.build`` (the line
diff into TextEdits): the targets, < 2 s for 10 MB and < 100 ms for 449 KiB. Also ``handoff
apply`` (``apply_to_disk``) of the clean 10 MB result.

Through the server: the 10 MB file open in the editor with the developer's edits unsaved, a
session ready, then ``handoff.apply`` sent while the client keeps asking for code actions on
another file: their latency while the big apply runs (the server answers meanwhile), and the
apply's time to ``workspace/applyEdit``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lsprotocol import types

from . import daemons
from .common import OUT, fresh_dir, git, median, pct, server_env, summary
from .lsp import BenchClient, handoff_argv

AGENT = """
import json, pathlib, sys
spec = json.loads(pathlib.Path(sys.argv[1]).read_text())
p = pathlib.Path("big.py")
lines = p.read_text().splitlines(keepends=True)
for at, text in spec["replace"]:
    lines[at] = text
lines[spec["insert"]:spec["insert"]] = spec["block"]
p.write_text("".join(lines))
print("changed big.py in", len(spec["replace"]), "places")
"""


def source(size: int) -> str:
    """Generated Python of about ``size`` bytes, many of its lines repeated."""
    parts, n, total = [], 0, 0
    while total < size:
        block = (
            f"def handler_{n}(request, context=None):\n"
            "    if request is None:\n"
            "        return None\n"
            f"    value = request.get('field_{n % 97}')\n"
            "    if value:\n"
            "        return value\n"
            "    pass\n"
            "    return None\n"
            "\n\n"
        )
        parts.append(block)
        total += len(block)
        n += 1
    return "".join(parts)


def _at(lines: list[str], frac: float, prefix: str = "    value = ") -> int:
    i = int(len(lines) * frac)
    while not lines[i].startswith(prefix):
        i += 1
    return i


def scenario(text: str) -> tuple[dict[str, Any], str, str]:
    """(the agent's spec, the developer's text for the clean case, and for the conflict case)."""
    lines = text.splitlines(keepends=True)
    agent = {
        "replace": [
            [_at(lines, f), f"    value = agent_{k}(request)\n"]
            for k, f in enumerate((0.01, 0.5, 0.99))
        ],
        "insert": _at(lines, 0.75, "def "),
        "block": ["def added_by_agent():\n", "    return None\n", "\n\n"],
    }
    mine = list(lines)
    for f in (0.3, 0.6):
        mine[_at(lines, f)] = "    value = developer(request)\n"
    clean = "".join(mine)
    mine[_at(lines, 0.5)] = "    value = developer_too(request)\n"
    return agent, clean, "".join(mine)


def _repo(base: Path, text: str) -> Path:
    repo = base / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "big.py").write_text(text)
    (repo / "small.py").write_text("# TODO(agent): something small\nx = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "big")
    return repo


def _agent(base: Path, spec: dict[str, Any]) -> list[str]:
    (base / "agent-spec.json").write_text(json.dumps(spec))
    (base / "agent.py").write_text(AGENT)
    return [sys.executable, str(base / "agent.py"), str(base / "agent-spec.json")]


def _in_process(base: Path, size: int, runs: int) -> dict[str, Any]:
    import anyio
    from handoff.agent.config import load
    from handoff.agent.manager import DelegateRequest, SessionManager
    from handoff.agent.store import Store
    from handoff.server import edits

    from .lsp import capabilities

    text = source(size)
    spec, clean, conflict = scenario(text)
    repo = _repo(base, text)
    argv = _agent(base, spec)
    cfg, _ = load(
        repo, overrides=[("bench", {"agent": "big", "agents": {"big": {"command": argv}}})]
    )
    manager = SessionManager(repo, cfg, store=Store(repo, root=base / "state"))
    caps = edits.EditCaps.from_client(capabilities(), "utf-16")
    out: dict[str, list[float]] = {"clean_s": [], "conflict_s": [], "apply_to_disk_s": []}

    def timed(sid: str, mine: str) -> tuple[float, int]:
        docs = {"big.py": edits.OpenDoc((repo / "big.py").as_uri(), mine, 1)}
        current: dict[str, bytes | None] = {}

        def read(path: str) -> bytes | None:
            data = docs[path].text.encode() if path in docs else manager.read_disk(path)
            current[path] = data
            return data

        t0 = time.perf_counter()
        plans = manager.plan(sid, read)
        conflicts = sum(len(p.conflicts) for p in plans if p.action == "conflict")
        if not conflicts:
            built = edits.build(plans, repo, docs, current, caps)
            if (
                edits.apply_text_edits(mine, built.edit.document_changes[0].edits)
                != plans[0].content.decode()
            ):
                raise RuntimeError("the edits do not give the merge")
        return time.perf_counter() - t0, conflicts

    async def main() -> None:
        for _ in range(runs):
            s = manager.delegate(DelegateRequest(instruction="big"))
            s = await manager.wait(s.id)
            if s.state.value != "ready":
                raise RuntimeError(f"session ended {s.state.value}: {s.error}")
            t, n = await anyio.to_thread.run_sync(timed, s.id, clean)
            if n:
                raise RuntimeError(f"{n} conflicts in the clean case")
            out["clean_s"].append(t)
            t, n = await anyio.to_thread.run_sync(timed, s.id, conflict)
            if n != 1:
                raise RuntimeError(f"{n} conflicts where one was expected")
            out["conflict_s"].append(t)
            (repo / "big.py").write_text(clean)
            t0 = time.perf_counter()
            report = await anyio.to_thread.run_sync(manager.apply_to_disk, s.id)
            out["apply_to_disk_s"].append(time.perf_counter() - t0)
            if report.conflicts or "agent_1(request)" not in (repo / "big.py").read_text():
                raise RuntimeError("handoff apply did not apply the result")
            git(repo, "checkout", "-q", "--", "big.py")

    anyio.run(main)
    return out


async def _server(base: Path, size: int, log) -> dict[str, Any]:
    text = source(size)
    spec, clean, _ = scenario(text)
    repo = _repo(base, text)
    argv = _agent(base, spec)
    client = BenchClient()
    latencies: list[float] = []
    try:
        await client.start(
            handoff_argv(), env=server_env(base / "state"), stderr_path=base / "server.stderr"
        )
        await client.initialize(repo, {"agent": "big", "agents": {"big": {"command": argv}}})
        await client.list_sessions()
        small = client.open(repo / "small.py")
        big = client.open(repo / "big.py")
        rng = types.Range(
            start=types.Position(line=0, character=0), end=types.Position(line=0, character=5)
        )
        r = await client.command(
            "handoff.delegate",
            {
                "uri": big,
                "instruction": "big",
                "range": {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}},
            },
        )
        sid = r["sessionId"]
        await client.wait_sessions(
            lambda ss: any(s["id"] == sid and s["state"] == "ready" for s in ss),
            300,
            "the big session ready",
        )
        for _ in range(20):  # warm
            await client.code_action(small, rng)
        editing = await _editing(client, big, small, rng, text, clean)
        before = len(client.apply_edits)
        t0 = time.perf_counter()
        apply = asyncio.ensure_future(client.command("handoff.apply", {"sessionId": sid}))
        while not apply.done():
            t = time.perf_counter()
            await client.code_action(small, rng)
            latencies.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(0.005)
        result = await apply
        total = time.perf_counter() - t0
        if not result.get("applied") or len(client.apply_edits) != before + 1:
            raise RuntimeError(f"apply did not go through: {result}")
        to_edit = client.apply_edits[-1][0] - t0
    finally:
        await client.close()
    return {
        "code_action_ms": latencies,
        "to_apply_edit_s": to_edit,
        "round_trip_s": total,
        "editing_ms": editing,
    }


EDITS = 3  # of each kind


async def _editing(
    client: BenchClient, big: str, small: str, rng: types.Range, text: str, clean: str
) -> dict[str, list[float]]:
    """How long a code action sent right after an edit of the big document (which holds the
    session's origin, so its anchors move) waits: the time the server's loop spent on the edit.
    Whole-document changes (clients without incremental sync send the whole text): a small edit,
    and every line changed (a reformat); and an incremental one-character edit. Ends with the
    document's text at ``clean`` (the developer's unsaved edits the apply merges against)."""
    version = 1
    out: dict[str, list[float]] = {
        "whole_small_ms": [],
        "whole_all_ms": [],
        "incremental_ms": [],
        "floor_ms": [],
    }
    plain = client.open(Path(urlparse(big).path).with_name("plain.txt"), text)  # no session
    reformatted = "".join("  " + line for line in text.splitlines(keepends=True))

    async def timed(key: str, changes: list[Any], uri: str = big) -> None:
        nonlocal version
        await quiet(client, small, rng)
        version += 1
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=changes,
            )
        )
        t = time.perf_counter()  # the change's bytes are written: the server reads them now
        await client.code_action(small, rng)
        out[key].append((time.perf_counter() - t) * 1000)

    whole = types.TextDocumentContentChangeWholeDocument
    for _ in range(EDITS):
        for key, after in (
            ("whole_small_ms", clean),
            ("whole_small_ms", text),
            ("whole_all_ms", reformatted),  # what the server diffs in a worker thread
            ("whole_all_ms", text),
        ):
            await timed(key, [whole(text=after)])
    for after in (clean, text, clean):  # the same bytes to read and parse, nothing to move
        await timed("floor_ms", [whole(text=after)], plain)
    middle = types.Position(line=len(text.splitlines()) // 2, character=0)
    for i in range(EDITS):
        await timed(
            "incremental_ms",
            [
                types.TextDocumentContentChangePartial(
                    range=types.Range(start=middle, end=middle if i % 2 == 0 else middle_1(middle)),
                    text="#" if i % 2 == 0 else "",
                )
            ],
        )
    await timed("whole_small_ms", [whole(text=clean)])  # typed meanwhile, unsaved
    await quiet(client, small, rng)
    return out


async def quiet(client: BenchClient, small: str, rng: types.Range, limit_s: float = 30) -> None:
    """Until the server is idle again (three code actions in a row under 20 ms): what an edit
    started in the background (the conflict check a second after it, a diff in a worker
    thread) is over, so the next measurement sees the edit's own cost."""
    await asyncio.sleep(1.5)  # the server checks a ready session's conflicts 1 s after an edit
    deadline, calm = time.monotonic() + limit_s, 0
    while calm < 3 and time.monotonic() < deadline:
        t = time.perf_counter()
        await client.code_action(small, rng)
        calm = calm + 1 if time.perf_counter() - t < 0.02 else 0
        await asyncio.sleep(0.2 if calm else 0.5)


def middle_1(p: types.Position) -> types.Position:
    return types.Position(line=p.line, character=p.character + 1)


def run(sizes, log) -> dict[str, Any]:
    base = fresh_dir(OUT / "bigfile")
    big, mid = (1_000_000, 459_776) if sizes.quick else (10_000_000, 459_776)  # 449 KiB
    runs = 1 if sizes.quick else 3
    log(f"   {big // 1000} kB and {mid // 1024} KiB files, {runs} run(s)")
    res_big = _in_process(base / "big", big, runs)
    res_mid = _in_process(base / "mid", mid, runs)
    with daemons.stopped_after(base / "server" / "state"):
        server = asyncio.run(_server(base / "server", big, log))
    lat = server["code_action_ms"]
    label = f"{big / 1e6:.0f} MB"
    targets = []
    for name, res, limit in ((label, res_big, 2.0), ("449 KiB", res_mid, 0.1)):
        for key, what in (
            ("clean_s", "apply (merge + edits)"),
            ("conflict_s", "one conflict (merge + mapping)"),
        ):
            value = median(res[key])
            targets.append(
                {
                    "metric": f"{name} file: {what}",
                    "value": value,
                    "unit": "s",
                    "target": f"< {limit:g} s",
                    "met": value < limit,
                }
            )
    editing = server["editing_ms"]
    for key, what in (
        ("whole_small_ms", "a whole-document change (small edit)"),
        ("whole_all_ms", "a whole-document change (every line)"),
        ("incremental_ms", "an incremental one-character edit"),
    ):
        if key == "floor_ms":
            continue
        worst = max(editing[key])
        targets.append(
            {
                "metric": f"codeAction right after {what} of the {label} file, max",
                "value": worst,
                "unit": "ms",
                "target": "< 100 ms",
                "met": worst < 100,
            }
        )
    p99 = pct(lat, 99)
    targets.append(
        {
            "metric": f"codeAction p99 while a {label} apply runs",
            "value": p99,
            "unit": "ms",
            "target": "< 100 ms",
            "met": p99 < 100,
        }
    )
    return {
        "sizes_bytes": [big, mid],
        "runs": runs,
        "big": {k: summary(v) for k, v in res_big.items()},
        "mid": {k: summary(v) for k, v in res_mid.items()},
        "server": {
            "code_action_ms": summary(lat) if lat else None,
            "to_apply_edit_s": server["to_apply_edit_s"],
            "round_trip_s": server["round_trip_s"],
            "editing_ms": {k: summary(v) for k, v in editing.items()},
        },
        "targets": targets,
        "rows": [
            (
                f"{label}: handoff apply (apply_to_disk), median",
                f"{median(res_big['apply_to_disk_s']):.2f} s",
            ),
            (
                f"{label} over LSP: handoff.apply -> workspace/applyEdit",
                f"{server['to_apply_edit_s']:.2f} s",
            ),
            (
                f"codeAction after a whole-document change of another {label} document "
                "(no session in it: reading and parsing the 10 MB), max",
                f"{max(editing['floor_ms']):.1f} ms",
            ),
            (
                "codeActions answered during that apply (p50 / max)",
                f"{len(lat)} ({pct(lat, 50):.1f} / {max(lat):.1f} ms)" if lat else "0",
            ),
        ],
    }
