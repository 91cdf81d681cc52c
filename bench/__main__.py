"""``python -m bench [--quick] [--json out.json]``: Handoff's benchmarks, a table and a JSON file.

Benchmarks (see each module's docstring): ``startup`` (handoff-lsp vs jedi-language-server),
``latency`` (codeAction / listSessions idle and under load), ``handoff`` (delegate to agent start vs
``git worktree add``), ``apply`` (a 50-file WorkspaceEdit), ``scale`` (64 sessions, maxParallel 8),
``bigfile`` (a 10 MB and a 449 KiB file's result applied, with a conflict, and codeAction latency
meanwhile), ``daemon`` (the session daemon's events to the editor's list, ``handoff ls`` warm and
cold). Every benchmark stops the session daemons its servers started.

``--quick`` runs small sizes as a smoke test (well under a minute once the small repositories are
cached): it checks that every benchmark produced numbers, never the timings. Exit status: 0 when
every benchmark ran (targets met or not; ``--strict`` also fails on a missed target), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from . import daemons
from .common import OUT, ROOT, Sizes, machine

BENCHMARKS = ("startup", "latency", "handoff", "apply", "scale", "bigfile", "daemon")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _load() -> float:
    return os.getloadavg()[0]


def _run_one(name: str, sizes: Sizes, tmpfs: Path | None) -> dict[str, Any]:
    if name == "startup":
        from . import b_startup as mod
    elif name == "latency":
        from . import b_latency as mod
    elif name == "handoff":
        from . import b_handoff as mod
    elif name == "apply":
        from . import b_apply as mod
    elif name == "scale":
        from . import b_scale as mod
    elif name == "bigfile":
        from . import b_bigfile as mod
    elif name == "daemon":
        from . import b_daemon as mod
    else:
        raise ValueError(name)
    if name == "handoff" and tmpfs is not None:
        return mod.run(sizes, _log, tmpfs)
    return mod.run(sizes, _log)


def _fmt(value: Any, unit: str | None) -> str:
    if isinstance(value, float):
        if unit == "ms":
            return f"{value:.1f} ms"
        if unit == "s":
            return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
        if unit == "MB":
            return f"{value:.0f} MB"
        return f"{value:.2f}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str, str]] = []
    for name, res in results["benchmarks"].items():
        if "error" in res:
            rows.append((name, "ERROR", res["error"].splitlines()[-1][:80], "", ""))
            continue
        for t in res.get("targets", []):
            rows.append(
                (
                    name,
                    t["metric"],
                    _fmt(t["value"], t.get("unit")),
                    t["target"],
                    "yes" if t["met"] else "NO",
                )
            )
        for label, value in res.get("rows", []):
            rows.append((name, label, value, "", ""))
    head = ("benchmark", "measurement", "value", "target", "met")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join([line, sep, *body])


def header(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = []
    lines.append(
        f"Handoff benchmarks{' (quick: sizes too small for the targets to mean anything)' if results['quick'] else ''}"
        f" - {m['date']} - {m['nproc']} x {m['cpu']}, {m['memory_gb']} GB, Linux {m['kernel']}, "
        f"{m['git']}, Python {m['python']}, {m.get('filesystem', '?')}"
    )
    return "\n".join(lines)


def _stop_daemons() -> None:
    """The session daemons the benchmark's servers started (one per state folder under
    bench/out/) end with the benchmark, instead of waiting out ``daemon.idleMinutes``."""
    from handoff.agent.client import stop_daemon

    from .common import OUT

    for state in [*OUT.glob("*/state"), *OUT.glob("*/*/state")]:
        if (state / "daemon").is_dir():
            stop_daemon(state)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="small sizes; a smoke test that asserts no timing"
    )
    p.add_argument(
        "--json", type=Path, default=OUT / "results.json", help="where to write the results"
    )
    p.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    p.add_argument(
        "--tmpfs",
        nargs="?",
        const=Path("/dev/shm"),
        type=Path,
        metavar="DIR",
        help="run the handoff-cost benchmark once more with the repository on a RAM file "
        "system (default /dev/shm): git's CPU cost without disk noise",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument(
        "--table",
        type=Path,
        metavar="JSON",
        help="print the table of an earlier run's JSON and exit",
    )
    args = p.parse_args(argv)
    if args.table:
        earlier = json.loads(args.table.read_text())
        print(header(earlier))
        print(table(earlier))
        return 0
    os.chdir(ROOT)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}")
    sizes = Sizes.small() if args.quick else Sizes.full()
    results: dict[str, Any] = {
        "quick": args.quick,
        "machine": machine(),
        "sizes": sizes.__dict__,
        "benchmarks": {},
    }
    failed = False
    plan = [(n, None) for n in names]
    if args.tmpfs is not None and "handoff" in names:
        plan.insert(names.index("handoff") + 1, ("handoff", args.tmpfs))
    for name, tmpfs in plan:
        key = name if tmpfs is None else f"{name}-tmpfs"
        _log(f"== {key}")
        load0, t0 = _load(), time.monotonic()
        try:
            res = _run_one(name, sizes, tmpfs)
            if not res.get("targets") or not res.get("rows"):
                raise RuntimeError(f"{key} produced no numbers")
        except Exception as exc:
            failed = True
            res = {"error": "".join(traceback.format_exception(exc)).strip()}
            _log(res["error"])
        left = daemons.stop_all_under(OUT)  # a benchmark that did not stop its own daemons
        if left:
            _log(f"   stopped daemons {key} left running: {', '.join(map(str, left))}")
            res.setdefault("daemons_left_running", [str(p) for p in left])
        res["seconds"] = round(time.monotonic() - t0, 1)
        res["load_average_1m"] = [round(load0, 2), round(_load(), 2)]
        results["benchmarks"][key] = res
        _stop_daemons()
        _log(f"   ({res['seconds']} s, load average {load0:.1f} -> {_load():.1f})")
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str))
    print(header(results))
    print(table(results))
    print(f"\nJSON: {args.json}")
    missed = [
        t for r in results["benchmarks"].values() for t in r.get("targets", []) if not t["met"]
    ]
    if failed:
        return 1
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
