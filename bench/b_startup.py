"""1. Start-up: process start to the ``initialize`` answer, handoff-lsp vs jedi-language-server.

Both are started as editors start them (their console scripts), with the same initialize params
(VS Code's capabilities, the same workspace folder), interleaved run by run. Then one more run of
handoff-lsp with ``PYTHONPROFILEIMPORTTIME=1`` (the same as ``-X importtime``; its report goes to
stderr as each import finishes): no ``litellm`` line may be in stderr when ``initialize`` is
answered, nor after ``initialized`` and a few idle seconds (configuration pulled, repository
discovered, sessions loaded).

The server reaches the session daemon only after ``initialized`` (configuration, discovery of the
workspace's repository), so the timed runs, which stop at the ``initialize`` answer, never touch
it; the import-time run lingers after ``initialized`` and starts the daemon of the benchmark's
state folder, which is stopped at the end.
"""

from __future__ import annotations

import re
import shutil
from typing import Any

from . import daemons
from .common import OUT, VENV_BIN, fresh_dir, generated_repo, median, server_env, summary
from .lsp import initialize_params, raw_initialize

_IMPORT = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def _imports(text: str) -> list[tuple[str, int, int]]:
    """(module, nesting level, cumulative µs) of each import line."""
    return [
        (m.group(4), (len(m.group(3)) - 1) // 2, int(m.group(2))) for m in _IMPORT.finditer(text)
    ]


def run(sizes, log) -> dict[str, Any]:
    work = fresh_dir(OUT / "startup")
    with daemons.stopped_after(work / "state"):
        return _run(sizes, log, work)


def _run(sizes, log, work) -> dict[str, Any]:
    jedi = VENV_BIN / "jedi-language-server"
    handoff = VENV_BIN / "handoff-lsp"
    if not jedi.exists() and not shutil.which("jedi-language-server"):
        raise RuntimeError(
            "jedi-language-server is not installed: .venv/bin/pip install jedi-language-server"
        )
    jedi_argv = [str(jedi) if jedi.exists() else shutil.which("jedi-language-server")]
    root = generated_repo(sizes.medium_files, log=log)
    env = server_env(work / "state")
    params = initialize_params(root)
    servers = {"handoff-lsp": [str(handoff)], "jedi-language-server": jedi_argv}
    times: dict[str, list[float]] = {name: [] for name in servers}
    for name, argv in servers.items() if sizes.warmup else ():  # page cache, .pyc files
        raw_initialize(argv, env=env, params=params, stderr_path=work / f"{name}.warmup.stderr")
    for i in range(sizes.startup_runs):
        order = list(servers.items()) if i % 2 == 0 else list(reversed(servers.items()))
        for name, argv in order:
            times[name].append(
                raw_initialize(argv, env=env, params=params, stderr_path=work / f"{name}.stderr")
            )
    h, j = median(times["handoff-lsp"]), median(times["jedi-language-server"])
    log(f"  start-up median: handoff-lsp {h * 1000:.0f} ms, jedi-language-server {j * 1000:.0f} ms")

    # litellm must not be imported on the way to `initialize`, nor by an idle server.
    err = work / "handoff-lsp.importtime.stderr"
    seen: dict[str, str] = {}
    raw_initialize(
        [str(handoff)],
        env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
        params=params,
        stderr_path=err,
        linger_s=sizes.linger_s,
        on_answer=lambda: seen.__setitem__("at_answer", err.read_text(errors="replace")),
    )
    at_answer = _imports(seen["at_answer"])
    after_idle = _imports(err.read_text(errors="replace"))
    litellm_before = [m for m, _, _ in at_answer if m == "litellm" or m.startswith("litellm.")]
    litellm_idle = [m for m, _, _ in after_idle if m == "litellm" or m.startswith("litellm.")]
    if not at_answer:
        raise RuntimeError(
            "no import-time report in the server's stderr: the litellm check cannot be made"
        )
    top_level = sorted(((m, c) for m, level, c in at_answer if level == 0), key=lambda x: -x[1])[:8]
    return {
        "runs": sizes.startup_runs,
        "handoff_s": summary(times["handoff-lsp"]),
        "jedi_s": summary(times["jedi-language-server"]),
        "ratio": h / j,
        "litellm_imported_before_initialize": bool(litellm_before),
        "litellm_imported_when_idle": bool(litellm_idle),
        "modules_imported_before_initialize": len(at_answer),
        "top_imports_before_initialize_ms": {m: round(c / 1000, 1) for m, c in top_level},
        "targets": [
            {
                "metric": "start-up ratio handoff/jedi",
                "value": h / j,
                "target": "<= 1.0",
                "met": h / j <= 1.0,
            },
            {
                "metric": "litellm not imported before initialize answer (-X importtime)",
                "value": "not imported" if not litellm_before else "IMPORTED",
                "target": "not imported",
                "met": not litellm_before,
            },
        ],
        "rows": [
            ("start-up: handoff-lsp to initialize answer, median", f"{h * 1000:.0f} ms"),
            ("start-up: jedi-language-server to initialize answer, median", f"{j * 1000:.0f} ms"),
            (
                f"litellm imported when idle (initialized + {sizes.linger_s:g} s)",
                "yes" if litellm_idle else "no",
            ),
        ],
    }
