"""The seam between the LSP front and the session owner: ``server/`` imports only the daemon's
protocol module and its client from ``agent/``; ``agent/`` never imports ``server/``, pygls or
lsprotocol (docs/DESIGN.md, "The picture of the house")."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import ROOT

SEAM = {"handoff.agent.protocol", "handoff.agent.client"}


def imports(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_server_reaches_the_agent_side_only_through_the_seam():
    crossing = {
        file: sorted(
            n
            for n in names
            if n.startswith("handoff.agent")
            and not any(n == s or n.startswith(s + ".") for s in SEAM)
            and n != "handoff.agent"
        )  # `from handoff.agent import protocol`
        for file, names in imports(ROOT / "server").items()
    }
    assert {f: n for f, n in crossing.items() if n} == {}


def test_the_agent_side_never_imports_the_lsp_front():
    bad = {
        file: sorted(
            n
            for n in names
            if n.split(".")[0] in ("pygls", "lsprotocol") or n.startswith("handoff.server")
        )
        for file, names in imports(ROOT / "agent").items()
    }
    assert {f: n for f, n in bad.items() if n} == {}
