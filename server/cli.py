"""``handoff-lsp``: the language server on stdio (or TCP).

stdout belongs to JSON-RPC. The protocol gets its own duplicate of file descriptor 1, and both
``sys.stdout`` and descriptor 1 are then pointed at stderr, so a stray ``print`` (litellm prints)
or a child process writing to its inherited stdout can never corrupt the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import stat
import sys
import threading

from handoff import __version__

log = logging.getLogger("handoff.server")

DESCRIPTION = (
    "The Handoff language server, on stdio (or TCP): hand work from the editor to "
    "background coding agents and take the result back as edits."
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="handoff-lsp", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"handoff-lsp {__version__}")
    p.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio")
    p.add_argument("--stdio", action="store_true", help="use stdio (the default)")
    p.add_argument("--log-file", metavar="PATH", help="write the log there instead of stderr")
    p.add_argument(
        "--log-level",
        default=os.environ.get("HANDOFF_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
    )
    args, unknown = p.parse_known_args(argv)
    args.unknown = unknown  # editors add their own flags (e.g. --clientProcessId); never fatal
    return args


class _ExpectedErrors(logging.Filter):
    """pygls logs a traceback for every error response; ours are expected and say it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Unable to deserialize message\n%s":
            return False  # HandoffProtocol answers it and logs one line instead of a traceback
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__name__ == "RequestFailed":
            record.msg, record.args, record.exc_info = "request failed: %s", (exc,), None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class _CappedFormatter(logging.Formatter):
    """Log records of at most ``MAX_RECORD`` characters: a request that carries a megabyte must
    not become a megabyte line on stderr (editors and test clients read stderr by lines)."""

    MAX_RECORD = 16_000

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if len(text) <= self.MAX_RECORD:
            return text
        half = self.MAX_RECORD // 2
        return f"{text[:half]} …[{len(text) - 2 * half} characters left out]… {text[-half:]}"


def _logging(args: argparse.Namespace) -> None:
    handler: logging.Handler
    if args.log_file:
        handler = logging.FileHandler(args.log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_CappedFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_ExpectedErrors())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("handoff").setLevel(args.log_level)


def _protocol_stdout():
    """A private binary stream on the real stdout; fd 1 and sys.stdout then go to stderr."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


class _PipeReader:
    """pygls' AsyncReader on asyncio's own pipe reader: reads run on the event loop. (pygls'
    ``StdinAsyncReader`` hops to a worker thread for every header line and body; under load, with
    other threads holding the GIL, each hop waits and messages arrive tens of ms apart.)
    End of input reads as b"", as run_async expects."""

    LIMIT = 1 << 20  # of a header line; bodies (readexactly) may be any size

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.stream = stream

    async def readline(self) -> bytes:
        dropping = False
        while True:
            try:
                line = await self.stream.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                return b"" if dropping else exc.partial
            except asyncio.LimitOverrunError as exc:
                # No header is that long: drop the line (like a header pygls does not know) and
                # read on past its end, in pieces, so the buffer stays bounded.
                if not dropping:
                    log.warning("dropped a header line longer than %d bytes", self.LIMIT)
                await self.stream.readexactly(exc.consumed)
                dropping = True
                continue
            if not dropping:
                return line
            dropping = False  # that was the end of the dropped line

    async def readexactly(self, n: int) -> bytes:
        try:
            return await self.stream.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            return exc.partial


class _PipeWriter:
    """pygls' writer on asyncio's own pipe transport: a write never blocks the event loop. (With
    a blocking write, an editor busy elsewhere that reads slowly, or a message larger than the
    pipe, stops the server until it is read.) What the pipe cannot take yet is queued, in order;
    ``close`` waits until it is written."""

    FLUSH_S = 10.0  # at most, at exit, for an editor that stopped reading

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()

    def write(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if threading.get_ident() == self.thread:
            self.transport.write(data)
        else:  # transports belong to their loop's thread
            self.loop.call_soon_threadsafe(self.write, data)

    async def flush(self) -> None:
        deadline = self.loop.time() + self.FLUSH_S
        while (
            self.transport.get_write_buffer_size()
            and not self.transport.is_closing()
            and self.loop.time() < deadline
        ):
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        await self.flush()
        self.transport.close()


def _is_pipe(stream) -> bool:
    """A pipe or socket, as editors give us: what the event loop can watch. (connect_*_pipe take
    character devices too, but epoll refuses /dev/null later, in a callback. Windows' loop needs
    overlapped handles, which standard streams are not.)"""
    mode = os.fstat(stream.fileno()).st_mode
    return os.name == "posix" and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode))


async def _stdout_writer(stdout):
    """A writer on the event loop when stdout is a pipe or socket; else pygls' blocking one."""
    try:
        if _is_pipe(stdout):
            transport, _ = await asyncio.get_running_loop().connect_write_pipe(
                asyncio.Protocol, stdout
            )
            return _PipeWriter(transport)
    except (ValueError, OSError) as exc:
        log.debug("writing stdout with blocking writes: %s", exc)
    from pygls.io_ import StdoutWriter

    return StdoutWriter(stdout)


async def _stdin_reader(ls, stdin):
    """A reader on the event loop when stdin is a pipe or socket (as editors start us); else
    (a file, /dev/null, a terminal) pygls' reader in threads. Returns it and the transport to close."""
    try:
        if _is_pipe(stdin):
            stream = asyncio.StreamReader(limit=_PipeReader.LIMIT)
            transport, _ = await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(stream), stdin
            )
            return _PipeReader(stream), transport
    except (ValueError, OSError) as exc:  # not something the event loop can watch
        log.debug("reading stdin in threads: %s", exc)
    from pygls.io_ import StdinAsyncReader

    return StdinAsyncReader(stdin, ls.thread_pool), None


HANDLING_WAIT_S = 10.0  # at most, at exit, for requests still being handled


async def _serve_stdio(ls, stdin, stdout) -> None:
    from pygls.io_ import run_async

    ls._stop_event = threading.Event()
    writer = await _stdout_writer(stdout)
    ls.protocol.set_writer(writer)
    reader, transport = await _stdin_reader(ls, stdin)
    try:
        await run_async(
            stop_event=ls._stop_event,
            reader=reader,
            protocol=ls.protocol,
            logger=log,
            error_handler=ls.report_server_error,
        )
    finally:
        if transport is not None:
            transport.close()
        # The editor went away (or asked us to exit): running sessions become `interrupted`.
        await ls.close()
        # Requests still being handled (a shutdown waits for the close): each one's answer is
        # written by a callback of its task, which runs before asyncio.wait's own.
        handling = [
            f for f in ls.protocol._request_futures.values() if isinstance(f, asyncio.Future)
        ]
        if handling:
            await asyncio.wait(handling, timeout=HANDLING_WAIT_S)
        if isinstance(writer, _PipeWriter):
            await writer.flush()  # what the editor was still owed (the shutdown answer)


def main(argv: list[str] | None = None) -> int:
    # lsprotocol's import makes hundreds of thousands of objects: the cyclic GC would scan them
    # again and again while they load (~0.1 s of start-up), and again in every later full
    # collection (a pause while requests wait). Off while loading; then they are frozen.
    gc.disable()
    args = _parse(argv)
    _logging(args)
    if args.unknown:
        log.info("ignoring arguments %s", args.unknown)
    from .server import create_server

    ls = create_server()
    gc.freeze()
    gc.enable()
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        if not port.isdigit():
            print(f"handoff-lsp: --tcp wants HOST:PORT, got {args.tcp!r}", file=sys.stderr)
            return 2
        sys.stdout = sys.stderr
        ls.start_tcp(host or "127.0.0.1", int(port))
        return 0
    stdout = _protocol_stdout()
    log.info("handoff-lsp %s on stdio (pid %d)", __version__, os.getpid())
    try:
        asyncio.run(_serve_stdio(ls, sys.stdin.buffer, stdout))
    except (KeyboardInterrupt, SystemExit):
        pass
    except BrokenPipeError:
        log.error("the client closed the connection")
    finally:
        ls.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
