"""``handoff``: the terminal side of the same sessions the editor sees.

Every command is a client of the session daemon (started on demand, like the editor does): a
session started here shows in every open editor at once, and one started in an editor is here.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from handoff import __version__
from handoff.uris import path_of

from . import protocol
from .client import DaemonClient, RemoteError, client_env, status, stop_daemon
from .protocol import ACTIVE, Session, State
from .session import parse_iso
from .store import state_root


class UsageError(Exception):
    """A mistake in what was typed; the message says which."""


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


def _lines_range(spec: str | None) -> dict[str, Any] | None:
    if not spec:
        return None
    a, _, b = spec.partition("-")
    try:
        start, end = int(a), int(b or a)
    except ValueError:
        raise UsageError(f"--lines wants A-B (line numbers, 1-based), got {spec!r}") from None
    if start < 1 or end < start:
        raise UsageError(f"--lines wants A-B with 1 <= A <= B, got {spec!r}")
    return {"start": {"line": start - 1, "character": 0}, "end": {"line": end, "character": 0}}


def _print_session(s: Session) -> None:
    print(f"{s.id}  {s.state.value}  {s.title}")
    if s.summary:
        print(f"  summary: {s.summary}")
    if s.error:
        print(f"  error: {s.error}")
    if s.filesChanged:
        print("  files: " + ", ".join((path_of(u) or Path(u)).name for u in s.filesChanged))
    print(f"  agent: {s.agent}  steps: {s.steps}  cost: ${s.costUsd:.4f}")


class Terminal:
    """One connection to the daemon for one command, opened on the repository of the cwd."""

    def __init__(self, watch: str | None = None) -> None:
        self.watch = watch  # a session id whose progress goes to stderr
        self.latest: dict[str, dict[str, Any]] = {}  # session id -> its latest wire form
        self.changed = asyncio.Event()
        self._line = ""
        self.client = DaemonClient(
            name="handoff", on_session=self._session, on_progress=self._progress
        )
        self.root = ""

    async def open(self, start: Path) -> list[Session]:
        await self.client.connect()
        result = await self.client.call(protocol.OPEN_REPO, {"path": str(start)})
        self.root = result["root"]
        return [Session.from_dict(w) for w in result["sessions"]]

    def call(self, method: str, **params: Any) -> Awaitable[Any]:
        return self.client.call(method, {"root": self.root, **params})

    def _session(self, wire: dict[str, Any]) -> None:
        previous = self.latest.get(wire.get("id", ""))
        self.latest[wire.get("id", "")] = wire
        if wire.get("id") == self.watch and (
            previous is None or previous["state"] != wire["state"]
        ):
            print(f"[{wire['id']}] {wire['state']}", file=sys.stderr)
        self.changed.set()

    def _progress(self, params: dict[str, Any]) -> None:
        if params.get("sessionId") != self.watch:
            return
        line = f"[{params['sessionId']}] step {params.get('steps', 0)}: {params.get('message', '')}"
        if line != self._line:
            print(line, file=sys.stderr)
            self._line = line

    async def follow(self, session: dict[str, Any]) -> int:
        """Until the session is no longer queued or running (it goes on if this is interrupted)."""
        sid = self.watch = session["id"]
        self.latest.setdefault(sid, session)
        while State(self.latest[sid]["state"]) in ACTIVE:
            self.changed.clear()
            waiter = asyncio.ensure_future(self.changed.wait())
            lost = asyncio.ensure_future(self.client.lost.wait())
            await asyncio.wait({waiter, lost}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            lost.cancel()
            if self.client.lost.is_set():
                self.latest[sid] = await self._reconnect_get(sid)
        s = Session.from_dict(self.latest[sid])
        _print_session(s)
        if s.state is State.READY:
            print(f"\nReview: handoff show {s.id}   Apply: handoff apply {s.id}")
            return 0
        return 1

    async def _reconnect_get(self, sid: str) -> dict[str, Any]:
        print("handoff: the session daemon went away; starting a new one", file=sys.stderr)
        await self.client.close()
        await self.open(Path(self.root))
        session: dict[str, Any] = (await self.call(protocol.GET, sessionId=sid))["session"]
        return session

    async def close(self) -> None:
        await self.client.close()


def _repo_file(term: Terminal, file: str) -> str:
    path = Path(file).resolve()
    if not path.is_file():
        raise UsageError(f"--file {file}: no such file")
    try:
        return path.relative_to(Path(term.root).resolve()).as_posix()
    except ValueError:
        raise UsageError(f"--file {file} is outside the repository {term.root}") from None


async def _run(args: argparse.Namespace, term: Terminal) -> int:
    rng = _lines_range(args.lines)
    if args.lines and not args.file:
        raise UsageError("--lines needs --file")
    await term.open(Path.cwd())
    file = _repo_file(term, args.file) if args.file else None
    result = await term.call(
        protocol.DELEGATE,
        instruction=args.instruction,
        file=file,
        uri=Path(args.file).resolve().as_uri() if args.file else None,
        range=rng,
        agent=args.agent,
        env=client_env(),
        overrides=[],
    )
    for m in result.get("messages") or []:
        print(f"handoff: config: {m}", file=sys.stderr)
    print(
        f"[{result['session']['id']}] delegated (it goes on in the background if you stop "
        "waiting: `handoff ls`)",
        file=sys.stderr,
    )
    return await term.follow(result["session"])


async def _again(args: argparse.Namespace, term: Terminal) -> int:
    """``followup ID "..."`` and ``resume ID``: run again in the session's worktree."""
    await term.open(Path.cwd())
    params: dict[str, Any] = {"sessionId": args.id, "env": client_env(), "overrides": []}
    if getattr(args, "instruction", None):
        params["instruction"] = args.instruction
    result = await term.call(protocol.FOLLOW_UP, **params)
    return await term.follow(result["session"])


async def cmd_ls(args: argparse.Namespace, term: Terminal) -> int:
    sessions = await term.open(Path.cwd())
    if not sessions:
        print("no sessions")
        return 0
    print(f"{'ID':<20} {'STATE':<11} {'AGE':>4}  {'AGENT':<10} TITLE")
    for s in sorted(sessions, key=lambda s: s.createdAt):
        print(f"{s.id:<20} {s.state.value:<11} {_age(s.createdAt):>4}  {s.agent:<10} {s.title}")
        if s.repoRoot and os.path.realpath(s.repoRoot) != os.path.realpath(term.root):
            print(f"{'':<20} in the worktree {s.repoRoot}")
        if s.question:
            call = s.question.get("toolCall") or {}
            options = " | ".join(str(o.get("optionId")) for o in s.question.get("options") or [])
            print(
                f"{'':<20} asks: {call.get('title') or 'permission'} -> "
                f"handoff answer {s.id} {{{options}}}"
            )
    return 0


async def cmd_answer(args: argparse.Namespace, term: Terminal) -> int:
    await term.open(Path.cwd())
    await term.call(protocol.ANSWER, sessionId=args.id, optionId=args.option)
    print(f"{args.id}: answered {args.option}")
    return 0


async def cmd_show(args: argparse.Namespace, term: Terminal) -> int:
    await term.open(Path.cwd())
    s = Session.from_dict((await term.call(protocol.GET, sessionId=args.id))["session"])
    _print_session(s)
    diff = (await term.call(protocol.DIFF, sessionId=args.id))["diff"]
    if diff:
        print()
        print(diff, end="")
    return 0


async def cmd_apply(args: argparse.Namespace, term: Terminal) -> int:
    await term.open(Path.cwd())
    report = await term.call(
        protocol.APPLY_TO_DISK, sessionId=args.id, conflictMarkers=args.conflict_markers
    )
    for path in report["written"]:
        print(f"applied  {path}")
    for fm in report["conflicts"]:
        regions = ", ".join(
            f"{c['start'] + 1}-{max(c['end'], c['start'] + 1)}" for c in fm["conflicts"]
        )
        verb = "markers " if args.conflict_markers else "conflict"
        print(f"{verb} {fm['path']} (lines {regions or '?'}): {fm['reason']}")
    if report["conflicts"] and not args.conflict_markers:
        print(
            f"{len(report['conflicts'])} file(s) conflict and were left untouched; "
            f"`handoff apply {args.id} --conflict-markers` writes them with markers",
            file=sys.stderr,
        )
        return 1
    if not report["written"]:
        print(f"{args.id}: nothing to write: your files already hold its result; marked applied")
    return 0


async def cmd_discard(args: argparse.Namespace, term: Terminal) -> int:
    await term.open(Path.cwd())
    await term.call(protocol.DISCARD, sessionId=args.id)
    print(f"{args.id} discarded")
    return 0


async def cmd_cancel(args: argparse.Namespace, term: Terminal) -> int:
    await term.open(Path.cwd())
    result = await term.call(protocol.CANCEL, sessionId=args.id, wait=True)
    print(f"{args.id} {result['session']['state']}")
    return 0


async def cmd_gc(args: argparse.Namespace, term: Terminal) -> int:
    await term.open(Path.cwd())
    res = await term.call(protocol.GC)
    removed = res["removed"]
    print(
        f"removed {len(removed)} leftover session(s)"
        + (": " + ", ".join(removed) if removed else "")
    )
    if res.get("poolRemoved"):
        print(
            f"removed {res['poolRemoved']} idle pooled worktree(s) ({_size(res['poolBytes'])}); "
            "the pool is made again at the next delegation"
        )
    return 0


def cmd_agents(args: argparse.Namespace) -> int:
    """Presets and configured agents, whether each is installed (no session is touched)."""
    import json

    from . import config as config_mod
    from . import gitops
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


def cmd_daemon(args: argparse.Namespace) -> int:
    root = state_root()
    if args.action is None:
        from .daemon import run

        return run(root)
    if args.action == "status":
        st = status(root)
        if st is None:
            print(f"no Handoff daemon is running for {root}")
            return 1
        counts = ", ".join(f"{n} {state}" for state, n in sorted(st["sessions"].items())) or "none"
        print(
            f"pid {st['pid']}  version {st['version']} (protocol {st['protocolVersion']})  "
            f"up {_duration(time.time() - st['startedAt'])}"
        )
        print(f"socket: {st['socket']}")
        print(f"state: {st['stateDir']}")
        print(f"sessions: {counts}")
        clients = (
            ", ".join(f"{c.get('name', '?')} (pid {c.get('pid', '?')})" for c in st["clients"])
            or "none"
        )
        print(f"clients: {clients}")
        pools = st.get("pool") or {}
        for repo in st["repos"]:
            idle = pools.get(repo)
            extra = (
                f"  (pool: {idle['worktrees']} idle worktree(s), {_size(idle['bytes'])})"
                if idle is not None
                else ""
            )
            print(f"repository: {repo}{extra}")
        if pools:
            total = sum(p["bytes"] for p in pools.values())
            count = sum(p["worktrees"] for p in pools.values())
            print(f"pool: {count} idle worktree(s), {_size(total)} on disk")
            print(f"repository: {repo}")
        ex = st.get("executor") or {}
        if ex.get("executor") == "ray":
            print(
                f"executor: ray, cluster {ex['cluster']} ({ex.get('nodes', '?')} nodes, "
                f"{ex.get('cpus', '?'):g} CPUs)"
            )
            for sid, w in sorted(ex.get("remote", {}).items()):
                if w.get("node"):
                    print(f"  {sid} on node {w['ip']} ({w['node'][:12]}), pid {w['pid']}")
        else:
            print("executor: local")
        return 0
    if args.action == "stop":
        if stop_daemon(root):
            print(
                "the Handoff daemon stopped (running sessions are interrupted: `handoff resume ID`)"
            )
        else:
            print(f"no Handoff daemon is running for {root}")
        return 0
    path = protocol.log_path(root)
    try:
        lines = path.read_text("utf-8", "replace").splitlines()
    except FileNotFoundError:
        print(f"no daemon log yet ({path})")
        return 0
    print("\n".join(lines[-args.lines :]))
    return 0


def _size(n: int) -> str:
    """Bytes for people: ``812 KiB``, ``23.4 MiB``."""
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KiB"
    if n < 1024**3:
        return f"{n / 1024**2:.1f} MiB"
    return f"{n / 1024**3:.2f} GiB"


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def cmd_trust(args: argparse.Namespace) -> int:
    """``handoff trust``: trust this repository's Handoff settings as they are now."""
    from . import gitops, trust

    try:
        state = trust.trust(gitops.find_repo_root(Path.cwd()))
    except gitops.GitError as exc:
        print(f"handoff: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"handoff: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        from .store import state_dir_error

        print(f"handoff: {state_dir_error(exc, state_root())}", file=sys.stderr)
        return 2
    keys = ", ".join(state.guarded) or "nothing that needs trust"
    print(f"trusted {state.file} as it is now ({keys}); a change to it asks again")
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
    for name, helptext in (
        ("show", "summary and diff"),
        ("discard", "drop a session"),
        ("cancel", "stop a running session"),
    ):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("id")
    ap = sub.add_parser("apply", help="merge a result into the working tree (3-way)")
    ap.add_argument("id")
    ap.add_argument(
        "--conflict-markers",
        action="store_true",
        help="write conflicting files with conflict markers",
    )
    fu = sub.add_parser(
        "followup", help="continue a session in its worktree with a new instruction"
    )
    fu.add_argument("id")
    fu.add_argument("instruction")
    rs = sub.add_parser("resume", help="run an interrupted, failed or cancelled session again")
    rs.add_argument("id")
    sub.add_parser("gc", help="remove worktrees, branches and refs left by crashed sessions")
    an = sub.add_parser(
        "answer", help='answer an agent\'s permission question (permissions = "ask")'
    )
    an.add_argument("id")
    an.add_argument("option", help="one of the options `handoff ls` shows")
    sub.add_parser("trust", help="trust this repository's Handoff settings as they are now")
    dm = sub.add_parser("daemon", help="the session daemon: run it here, or status|stop|logs")
    dm.add_argument("action", nargs="?", choices=["status", "stop", "logs"])
    dm.add_argument(
        "-n", "--lines", type=int, default=200, help="logs: how many lines (default 200)"
    )
    ag = sub.add_parser(
        "agents", help="presets and configured agents, and whether each is installed"
    )
    ag.add_argument("--json", action="store_true", help="one JSON object per agent")
    return p


_ASYNC: dict[str, Callable[[argparse.Namespace, Terminal], Awaitable[int]]] = {
    "run": _run,
    "followup": _again,
    "resume": _again,
    "ls": cmd_ls,
    "show": cmd_show,
    "apply": cmd_apply,
    "discard": cmd_discard,
    "cancel": cmd_cancel,
    "gc": cmd_gc,
    "answer": cmd_answer,
}


async def _main_async(args: argparse.Namespace) -> int:
    term = Terminal()
    try:
        return await _ASYNC[args.cmd](args, term)
    finally:
        await term.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        if args.cmd == "daemon":
            return cmd_daemon(args)
        if args.cmd == "trust":  # local: the trust record, no daemon
            return cmd_trust(args)
        if args.cmd == "agents":  # local: what is installed here, no daemon
            return cmd_agents(args)
        return asyncio.run(_main_async(args))
    except (RemoteError, UsageError) as exc:
        print(f"handoff: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.cmd in ("run", "followup", "resume"):
            print(
                "\nhandoff: stopped waiting; the session goes on (`handoff ls`, `handoff cancel ID`)",
                file=sys.stderr,
            )
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
