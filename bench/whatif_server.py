"""What-if runs: ``handoff-lsp`` with a proposed change applied as a monkeypatch, so a benchmark can
measure a fix before anyone edits ``agent/`` or ``server/``. Nothing here is used by a normal run.

    BENCH_PATCHES=thread-model,prepare-limiter,checkout-workers,batch-blobs python -m bench --only ...

The benchmarks then start ``python -m bench.whatif_server --patches ...`` instead of ``handoff-lsp``
and apply the same patches to what they call in-process. Each patch is the proposed code itself:

- ``asyncio-stdin``: ``server/cli.py`` reads stdin with asyncio's own pipe reader
  (``loop.connect_read_pipe`` + ``asyncio.StreamReader``) instead of pygls' ``StdinAsyncReader``,
  which hops to a thread pool for every header line and body (3 hops a message, each needing the
  GIL twice: under load, with worker threads holding the GIL, messages are read ~35 ms apart).
- ``agent-process``: the built-in agent's loop runs in a child process (bench/agent_host.py), the
  server only relays its transcript events and progress; litellm never loads in the server.
- ``nice-agents``: agent processes (command agents, and the agent-process children) start at a
  lower CPU priority (``nice -n 10``): on a busy machine the editor's server is scheduled first.
- ``thread-model``: ``LiteLLMModel.complete`` runs the blocking ``litellm.completion`` (and the cost
  lookup) in a worker thread instead of ``await litellm.acompletion`` on the server's event loop.
- ``prepare-limiter``: ``SessionManager._first_run`` snapshots through a dedicated
  ``anyio.CapacityLimiter(2)`` instead of anyio's shared default (40 threads), so a burst of
  delegations neither runs 64 ``git add -A`` at once nor starves the server's quick thread hops.
- ``checkout-workers``: ``gitops.add_worktree`` runs ``git -c checkout.workers=<cpus> worktree add``.
- ``split-worktree-add``: ``gitops.add_worktree`` creates the worktree with ``--no-checkout`` (the
  part that touches shared admin files: ~10 ms) under the manager's lock, then fills it with
  ``git -c checkout.workers=<cpus> reset --hard`` (what ``worktree add`` runs itself) outside the
  lock, so sessions check out in parallel instead of one after another.
- ``cheap-flush``: ``Session.to_wire`` builds a shallow dict instead of ``dataclasses.asdict`` (a
  deep copy: ~10x slower), and ``Status.flush_now`` (run after every command) sends only the
  session list at once, leaving the diagnostics to the coalescing 100 ms timer.
- ``batch-blobs``: ``SessionManager.plan`` reads every blob with one ``git cat-file --batch`` (when
  no attribute or ``core.autocrlf`` asks for a conversion; else the current per-blob reads).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PATCHES = ("asyncio-stdin", "agent-process", "nice-agents", "thread-model", "prepare-limiter", "checkout-workers", "split-worktree-add",
           "batch-blobs", "cheap-flush", "trace-delegate", "trace-handoff")


def from_env() -> list[str]:
    names = [p.strip() for p in os.environ.get("BENCH_PATCHES", "").split(",") if p.strip()]
    unknown = [n for n in names if n not in PATCHES]
    if unknown:
        raise SystemExit(f"BENCH_PATCHES: unknown patch(es) {unknown}; known: {', '.join(PATCHES)}")
    return names


def server_argv(names: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "bench.whatif_server", "--patches", ",".join(names), "--"]


# -- asyncio-stdin --------------------------------------------------------------------------------


class PipeReader:
    """pygls' AsyncReader on an ``asyncio.StreamReader`` (end of input reads as b"")."""

    def __init__(self, reader) -> None:
        self.reader = reader

    async def readline(self) -> bytes:
        return await self.reader.readline()

    async def readexactly(self, n: int) -> bytes:
        import asyncio

        try:
            return await self.reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            return exc.partial


def _asyncio_stdin() -> None:
    import asyncio
    import threading

    from handoff.server import cli

    async def _serve_stdio(ls, stdin, stdout) -> None:
        from pygls.io_ import StdinAsyncReader, StdoutWriter, run_async

        ls._stop_event = threading.Event()
        ls.protocol.set_writer(StdoutWriter(stdout))
        loop = asyncio.get_running_loop()
        try:
            stream = asyncio.StreamReader(limit=1 << 20)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), stdin)
            reader = PipeReader(stream)
        except (ValueError, OSError):  # not a pipe, socket or tty (a file): read it in threads
            reader = StdinAsyncReader(stdin, ls.thread_pool)
        try:
            await run_async(stop_event=ls._stop_event, reader=reader, protocol=ls.protocol,
                            logger=cli.log, error_handler=ls.report_server_error)
        finally:
            await ls.close()

    cli._serve_stdio = _serve_stdio


# -- thread-model -------------------------------------------------------------------------------


def _thread_model() -> None:
    import time

    import anyio

    from handoff.agent.backends import model as m
    from handoff.agent.backends.base import AgentError

    def complete_blocking(self, messages, tools) -> m.ModelReply:
        litellm = m.import_litellm()
        retryable = (litellm.RateLimitError, litellm.InternalServerError, litellm.ServiceUnavailableError,
                     litellm.BadGatewayError, litellm.APIConnectionError, litellm.Timeout)
        attempt = 0
        while True:
            try:
                response = litellm.completion(
                    model=self.model, messages=messages, tools=tools, api_base=self.api_base,
                    api_key=self._api_key, timeout=self.timeout_s, num_retries=0, max_retries=0)
                break
            except retryable as exc:
                if attempt >= self.retries:
                    raise AgentError(f"the model is unavailable after {attempt + 1} attempts: "
                                     f"{self._describe(exc)}") from None
                time.sleep(m._delay(attempt, exc))
                attempt += 1
            except litellm.AuthenticationError as exc:
                raise AgentError(f"model authentication failed ({m._status(exc, 401)}): "
                                 "check HANDOFF_API_KEY / apiKey") from None
            except (litellm.BadRequestError, litellm.UnprocessableEntityError, litellm.NotFoundError,
                    litellm.PermissionDeniedError, litellm.ContextWindowExceededError) as exc:
                raise AgentError(f"the model rejected the request: {self._describe(exc)}") from None
            except litellm.APIError as exc:
                if m._status(exc, 0) < 500 or attempt >= self.retries:
                    raise AgentError(f"model error: {self._describe(exc)}") from None
                time.sleep(m._delay(attempt, exc))
                attempt += 1
        return m.ModelReply(m._assistant_message(response), m._cost(litellm, response))

    async def complete(self, messages, tools):
        await m.load_litellm()
        return await anyio.to_thread.run_sync(functools.partial(complete_blocking, self, messages, tools),
                                              abandon_on_cancel=True)

    m.LiteLLMModel.complete = complete


# -- prepare-limiter ------------------------------------------------------------------------------


def _prepare_limiter() -> None:
    import anyio

    from handoff.agent.manager import SessionManager

    async def _first_run(self, s, req) -> None:
        if getattr(self, "_prepare_limiter", None) is None:
            self._prepare_limiter = anyio.CapacityLimiter(2)

        async def prepare() -> None:
            await anyio.to_thread.run_sync(self._prepare, s, req, limiter=self._prepare_limiter)

        await self._run(s, prepare)

    SessionManager._first_run = _first_run


# -- checkout-workers -----------------------------------------------------------------------------


def _checkout_workers() -> None:
    from handoff.agent import gitops

    original = gitops._run
    workers = str(os.cpu_count() or 2)

    def _run(cwd, *args, **kw):
        if "worktree" in args and args[args.index("worktree") + 1:args.index("worktree") + 2] == ("add",):
            args = ("-c", f"checkout.workers={workers}", *args)
        return original(cwd, *args, **kw)

    gitops._run = _run


# -- split-worktree-add ---------------------------------------------------------------------------


def _split_worktree_add() -> None:
    import contextlib
    import threading

    from handoff.agent import gitops
    from handoff.agent.manager import SessionManager

    admin = threading.Lock()  # stands for the manager's _git_lock, now held for admin steps only
    workers = str(os.cpu_count() or 2)

    def add_worktree(repo_root, path, *, branch, commit) -> None:
        if gitops._branch_exists(repo_root, branch):
            raise gitops.GitError(f"branch {branch} exists already in {repo_root}")
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise gitops.GitError(f"worktree folder exists already and is not empty: {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with admin:
            gitops._run(repo_root, *gitops._NO_HOOKS, "worktree", "add", "--quiet", "--no-checkout",
                        "-b", branch, str(path), commit)
        gitops._run(path, *gitops._NO_HOOKS, "-c", f"checkout.workers={workers}", "reset", "--hard",
                    "--quiet", "--no-recurse-submodules")

    original_init, original_cleanup = SessionManager.__init__, SessionManager._cleanup

    def __init__(self, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)
        self._git_lock = contextlib.nullcontext()  # add() no longer serialises whole checkouts

    def _cleanup(self, s) -> None:
        with admin:
            original_cleanup(self, s)

    gitops.add_worktree = add_worktree
    SessionManager.__init__ = __init__
    SessionManager._cleanup = _cleanup


# -- cheap-flush --------------------------------------------------------------------------------------


def _cheap_flush() -> None:
    import dataclasses

    from handoff.agent.session import Session
    from handoff.server import status

    names = tuple(f.name for f in dataclasses.fields(Session))

    def to_wire(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in names}
        d["state"] = self.state.value
        d["filesChanged"] = list(self.filesChanged)
        if d["range"] is not None:
            d["range"] = {k: dict(v) if isinstance(v, dict) else v for k, v in d["range"].items()}
        if d["error"] is None:
            del d["error"]
        return d

    def flush_now(self) -> None:
        if self._flush is None or not self._list_dirty:
            return
        self._list_dirty = False
        self.ls.protocol.notify(status.NOTIFICATION, {"sessions": [s.to_wire() for s in self.ls.repos.sessions()]})

    Session.to_wire = to_wire
    status.Status.flush_now = flush_now


# -- trace-delegate (diagnosis only: logs where a delegate request spends its time) ----------------


def _trace_delegate() -> None:
    import logging
    import time

    from handoff.server import delegation, repos, settings

    log = logging.getLogger("handoff.bench.trace")

    def timed(owner, name):
        original = getattr(owner, name)

        async def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                log.warning("trace %s %.1f ms", name, (time.perf_counter() - t0) * 1000)

        setattr(owner, name, wrapper)

    from pygls.protocol import JsonRPCProtocol

    handle, send = JsonRPCProtocol.handle_message, JsonRPCProtocol._send_data
    seen: dict[Any, float] = {}

    def handle_message(self, message):
        if getattr(message, "method", None) == "workspace/executeCommand":
            seen[message.id] = time.perf_counter()
        return handle(self, message)

    def _send_data(self, data):
        t0 = time.perf_counter()
        result = send(self, data)
        mid = getattr(data, "id", None)
        if mid in seen:
            log.warning("trace request %.1f ms (write %.1f ms)", (time.perf_counter() - seen.pop(mid)) * 1000,
                        (time.perf_counter() - t0) * 1000)
        return result

    JsonRPCProtocol.handle_message = handle_message
    JsonRPCProtocol._send_data = _send_data
    timed(repos.Repos, "for_uri")
    timed(repos.Repos, "overlays")
    timed(settings.Settings, "config_for")
    timed(delegation, "delegate")


# -- trace-handoff (diagnosis only: logs the steps from delegate to agent start) -----------------


def _trace_handoff() -> None:
    import logging
    import time

    from handoff.agent import gitops, manager, store
    from handoff.agent.backends import command

    log = logging.getLogger("handoff.bench.trace")

    def timed_sync(owner, name):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                log.warning("trace %s %.1f ms", name, (time.perf_counter() - t0) * 1000)

        setattr(owner, name, wrapper)

    for name in ("snapshot", "read_blob", "add_worktree", "_run"):
        timed_sync(gitops, name)
    timed_sync(store.Store, "save")
    timed_sync(store.Store, "write_brief")
    timed_sync(manager.SessionManager, "_prepare")
    timed_sync(command.CommandBackend, "_env")
    original_delegate = manager.SessionManager.delegate

    def delegate(self, req):
        log.warning("trace delegate-called")
        return original_delegate(self, req)

    manager.SessionManager.delegate = delegate
    original_started = manager.SessionManager._agent_started

    def _agent_started(self, s, pid):
        log.warning("trace agent-started")
        return original_started(self, s, pid)

    manager.SessionManager._agent_started = _agent_started


# -- batch-blobs ----------------------------------------------------------------------------------

def read_blobs(repo_root: Path, items: Sequence[tuple[str, str]]) -> list[bytes | None]:
    """Now ``gitops.read_blobs`` (it landed from this what-if)."""
    from handoff.agent import gitops

    return gitops.read_blobs(repo_root, items)


def _batch_blobs() -> None:
    from handoff.agent import gitops
    from handoff.agent.merge import FileMerge, merge_change

    def plan(repo_root, base, result, read_current):
        """agent/results.py ``plan`` with every blob read by one ``read_blobs`` call."""
        changes = gitops.changes(repo_root, base, result)
        items = []
        for change in changes:
            items += [(base, change.old_path or change.path), (result, change.path)]
        blobs = read_blobs(repo_root, items)
        plans = []
        for i, change in enumerate(changes):
            base_path = change.old_path or change.path
            fm = merge_change(change, blobs[2 * i], read_current(base_path), blobs[2 * i + 1])
            if change.status == "renamed" and fm.action != "conflict" and read_current(change.path) is not None:
                fm = FileMerge(path=change.path, action="conflict", content=None, conflicts=fm.conflicts,
                               old_path=change.old_path,
                               reason=f"{change.path} exists already; the agent renamed {base_path} to it")
            plans.append(fm)
        return plans

    try:
        from handoff.agent import results
    except ImportError:  # before agent/results.py existed, SessionManager.plan did the reads itself
        from handoff.agent.manager import SessionError, SessionManager
        from handoff.agent.session import State

        def manager_plan(self, session_id, read_current):
            s = self.get(session_id)
            if s.state is not State.READY:
                raise SessionError(f"session {s.id} is {s.state.value}, not ready: nothing to apply")
            return plan(self.repo_root, s.baseCommit, s.resultCommit, read_current)

        SessionManager.plan = manager_plan
    else:
        results.plan = plan


def _nice_agents() -> None:
    import anyio

    original = anyio.open_process

    async def open_process(command, *args, **kwargs):
        if isinstance(command, (list, tuple)):
            command = ["nice", "-n", "10", *command]
        return await original(command, *args, **kwargs)

    anyio.open_process = open_process


def _agent_process() -> None:
    from .agent_host import install

    install()


_APPLY = {"asyncio-stdin": _asyncio_stdin, "agent-process": _agent_process, "nice-agents": _nice_agents, "thread-model": _thread_model, "prepare-limiter": _prepare_limiter,
          "checkout-workers": _checkout_workers, "split-worktree-add": _split_worktree_add,
          "batch-blobs": _batch_blobs, "cheap-flush": _cheap_flush, "trace-delegate": _trace_delegate,
          "trace-handoff": _trace_handoff}


_applied: set[str] = set()


def apply(names: Sequence[str]) -> None:
    for name in names:
        if name not in _applied:
            _APPLY[name]()
            _applied.add(name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patches", default="")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    apply([n for n in args.patches.split(",") if n])
    from handoff.server.cli import main as server_main

    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    return server_main(rest)


if __name__ == "__main__":
    sys.exit(main())
