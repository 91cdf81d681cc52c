"""``handoff``: the terminal side of the same sessions the editor sees."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import anyio

from handoff import __version__

from . import config as config_mod
from . import gitops
from .manager import DelegateRequest, SessionError, SessionManager
from .session import Session, State, parse_iso


def _manager(start: Path) -> SessionManager:
    root = gitops.find_repo_root(start)
    cfg, messages = config_mod.load(root)
    for m in messages:
        print(f"handoff: config: {m}", file=sys.stderr)
    mgr = SessionManager(root, cfg)
    mgr.load()
    return mgr


def _age(iso: str) -> str:
    try:
        t = parse_iso(iso)
    except ValueError:
        return "?"
    secs = max(0, int(time.time() - t))
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= n:
            return f"{secs // n}{unit}"
    return f"{secs}s"


def _lines_range(spec: str | None) -> dict | None:
    if not spec:
        return None
    a, _, b = spec.partition("-")
    start, end = int(a), int(b or a)
    if start < 1 or end < start:
        raise SystemExit(f"handoff: --lines wants A-B with 1 <= A <= B, got {spec!r}")
    return {"start": {"line": start - 1, "character": 0}, "end": {"line": end, "character": 0}}


def _watch(mgr: SessionManager) -> None:
    """Progress of the sessions on stderr (stdout is for the result)."""
    last = [""]

    def on_progress(s: Session, message: str) -> None:
        line = f"[{s.id}] step {s.steps}: {message}"
        if line != last[0]:
            print(line, file=sys.stderr)
            last[0] = line

    def on_change(s: Session) -> None:
        print(f"[{s.id}] {s.state.value}", file=sys.stderr)

    mgr.subscribe(on_change, on_progress)


async def _until_done(mgr: SessionManager, sid: str) -> int:
    try:
        s = await mgr.wait(sid)
    finally:
        await mgr.close()
    _print_session(s)
    if s.state is State.READY:
        print(f"\nReview: handoff show {s.id}   Apply: handoff apply {s.id}")
        return 0
    return 1


async def _run(args: argparse.Namespace) -> int:
    mgr = _manager(Path.cwd())
    file = None
    if args.file:
        path = Path(args.file).resolve()
        try:
            file = path.relative_to(mgr.repo_root.resolve()).as_posix()
        except ValueError:
            raise SystemExit(f"handoff: {args.file} is outside the repository {mgr.repo_root}")
    _watch(mgr)
    s = mgr.delegate(
        DelegateRequest(
            instruction=args.instruction,
            file=file,
            uri=Path(args.file).resolve().as_uri() if args.file else None,
            range=_lines_range(args.lines),
            agent=args.agent,
        )
    )
    return await _until_done(mgr, s.id)


async def _again(args: argparse.Namespace) -> int:
    """``followup ID "..."`` and ``resume ID``: run again in the session's worktree."""
    mgr = _manager(Path.cwd())
    _watch(mgr)
    instruction = getattr(args, "instruction", None) or mgr.get(args.id).instruction
    s = mgr.follow_up(args.id, instruction)
    return await _until_done(mgr, s.id)


def _print_session(s: Session) -> None:
    print(f"{s.id}  {s.state.value}  {s.title}")
    if s.summary:
        print(f"  summary: {s.summary}")
    if s.error:
        print(f"  error: {s.error}")
    if s.filesChanged:
        print("  files: " + ", ".join(Path(u.removeprefix("file://")).name for u in s.filesChanged))
    print(f"  agent: {s.agent}  steps: {s.steps}  cost: ${s.costUsd:.4f}")


def cmd_ls(args: argparse.Namespace) -> int:
    mgr = _manager(Path.cwd())
    sessions = mgr.list()
    if not sessions:
        print("no sessions")
    for s in sessions:
        print(f"{s.id}  {s.state.value:<11} {_age(s.createdAt):>4}  {s.agent:<10} {s.title}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    mgr = _manager(Path.cwd())
    s = mgr.get(args.id)
    _print_session(s)
    diff = mgr.diff(s.id)
    if diff:
        print()
        print(diff, end="")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    mgr = _manager(Path.cwd())
    report = mgr.apply_to_disk(args.id, conflict_markers=args.conflict_markers)
    for path in report.written:
        print(f"applied  {path}")
    for fm in report.conflicts:
        regions = ", ".join(f"{c.start + 1}-{max(c.end, c.start + 1)}" for c in fm.conflicts)
        verb = "markers " if args.conflict_markers else "conflict"
        print(f"{verb} {fm.path} (lines {regions or '?'}): {fm.reason}")
    if report.conflicts and not args.conflict_markers:
        print(
            f"{len(report.conflicts)} file(s) conflict and were left untouched; "
            f"`handoff apply {args.id} --conflict-markers` writes them with markers",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_discard(args: argparse.Namespace) -> int:
    mgr = _manager(Path.cwd())
    s = mgr.get(args.id)
    if s.state in (State.QUEUED, State.RUNNING):
        mgr.cancel(args.id)
    mgr.discard(args.id)
    print(f"{args.id} discarded")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    mgr = _manager(Path.cwd())
    removed = mgr.gc()
    print(f"removed {len(removed)} leftover session(s)" + (": " + ", ".join(removed) if removed else ""))
    return 0


def cmd_agents(args: argparse.Namespace) -> int:
    """Presets and configured agents, whether each is installed (no session is touched)."""
    import json

    from .presets import agents_report, format_report

    try:
        root: Path | None = gitops.find_repo_root(Path.cwd())
    except gitops.GitError:
        root = None
    cfg, messages = config_mod.load(root)
    for m in messages:
        print(f"handoff: config: {m}", file=sys.stderr)
    rows = agents_report(cfg)
    print(json.dumps([r.to_dict() for r in rows], indent=2) if args.json else format_report(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="handoff", description="Handoff sessions from the terminal.")
    p.add_argument("--version", action="version", version=f"handoff {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="delegate a task and wait for the result")
    run.add_argument("instruction")
    run.add_argument("--file", help="the origin file")
    run.add_argument("--lines", help="1-based line range A-B in --file")
    run.add_argument("--agent", help="builtin or a name under `agents`")
    sub.add_parser("ls", help="list sessions")
    for name, helptext in (("show", "summary and diff"), ("discard", "drop a session")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("id")
    ap = sub.add_parser("apply", help="merge a result into the working tree (3-way)")
    ap.add_argument("id")
    ap.add_argument("--conflict-markers", action="store_true",
                    help="write conflicting files with conflict markers")
    fu = sub.add_parser("followup", help="continue a session in its worktree with a new instruction")
    fu.add_argument("id")
    fu.add_argument("instruction")
    rs = sub.add_parser("resume", help="run an interrupted, failed or cancelled session again")
    rs.add_argument("id")
    sub.add_parser("gc", help="remove worktrees, branches and refs left by crashed sessions")
    ag = sub.add_parser("agents", help="presets and configured agents, and whether each is installed")
    ag.add_argument("--json", action="store_true", help="one JSON object per agent")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        if args.cmd == "run":
            return anyio.run(_run, args)
        if args.cmd in ("followup", "resume"):
            return anyio.run(_again, args)
        return {"ls": cmd_ls, "show": cmd_show, "apply": cmd_apply, "discard": cmd_discard,
                "gc": cmd_gc, "agents": cmd_agents}[args.cmd](args)
    except (gitops.GitError, SessionError) as exc:
        print(f"handoff: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
