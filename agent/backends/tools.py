"""The built-in agent's tools, confined to one worktree.

:meth:`Workspace.dispatch` takes a tool name and its JSON arguments and always returns text
for the model: a refusal or a bad argument is an ``error: ...`` string, never an exception,
and a refused call performs nothing. Paths are relative to the worktree; anything absolute,
starting with ``~``, leaving the worktree (``..`` or a symlink, existing or created by the
agent), naming ``.git`` at any depth, or not a regular file or folder is refused.

``run_command`` follows ``commandPolicy`` (see :mod:`..sandbox`): confined by bubblewrap or
Landlock by default, refused under ``deny``, unconfined under ``allow``. It always gets a
scrubbed environment (plus the names in ``passEnv``), closed stdin, its own process group
(killed whole on timeout or when the loop is cancelled) and capped output.

Writes never go through an existing inode: content goes to a temporary file that replaces
the directory entry, so a hard link (which could share its inode with a file outside) is
replaced, never written through.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from handoff import files
from handoff.text import body, split_keepends

from .. import sandbox
from ..capped import HeadTail
from ..processes import background

MAX_READ_LINES = 2000
MAX_READ_CHARS = 60_000
MAX_LIST = 1000
MAX_MATCHES = 200
MAX_MATCH_LINE = 300
MAX_SEARCH_FILE_BYTES = 2_000_000
MAX_FILE_BYTES = 20_000_000
MAX_OUTPUT_BYTES = 12_000  # run_command output kept: half from the head, half from the tail
MAX_NAME_BYTES = 255


def _fn(name: str, description: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": props, "required": required},
        },
    }


_PATH = {"type": "string", "description": "path relative to the project root"}
TOOL_SCHEMAS: list[dict[str, Any]] = [
    _fn(
        "read_file",
        "Read a text file; lines come numbered (the numbers are not part of the file).",
        {
            "path": _PATH,
            "startLine": {"type": "integer", "description": "first line, 1-based"},
            "endLine": {"type": "integer", "description": "last line, inclusive"},
        },
        ["path"],
    ),
    _fn(
        "list_files",
        "List the files under a folder, recursively (default: the project root).",
        {"path": _PATH},
        [],
    ),
    _fn(
        "search",
        "Search text files for a Python regular expression; prints `path:line: text`.",
        {"pattern": {"type": "string"}, "path": _PATH},
        ["pattern"],
    ),
    _fn(
        "write_file",
        "Create or overwrite a file with the given content.",
        {"path": _PATH, "content": {"type": "string"}},
        ["path", "content"],
    ),
    _fn(
        "edit_file",
        "Replace oldText with newText in a file; oldText must occur exactly once.",
        {"path": _PATH, "oldText": {"type": "string"}, "newText": {"type": "string"}},
        ["path", "oldText", "newText"],
    ),
    _fn(
        "run_command",
        "Run a shell command in the project root; prints its exit code and output. "
        "Usually sandboxed: no network; files outside the project are read-only or hidden.",
        {"command": {"type": "string"}},
        ["command"],
    ),
    _fn(
        "finish",
        "End the task with a short summary of what you changed and why.",
        {"summary": {"type": "string"}},
        ["summary"],
    ),
]
_SPECS: dict[str, dict[str, tuple[type, bool]]] = {
    s["function"]["name"]: {
        k: (
            {"string": str, "integer": int}[v["type"]],
            k in s["function"]["parameters"]["required"],
        )
        for k, v in s["function"]["parameters"]["properties"].items()
    }
    for s in TOOL_SCHEMAS
}

TOOL_NAMES = frozenset(_SPECS)


class ToolError(Exception):
    """A refused or failed tool call; ``str(exc)`` goes back to the model."""


def check_args(name: str, args: Any) -> dict[str, Any]:
    """The arguments of ``name`` checked against its schema; extra keys are dropped."""
    spec = _SPECS.get(name)
    if spec is None:
        raise ToolError(f"unknown tool {name!r}; the tools are: {', '.join(_SPECS)}")
    if not isinstance(args, dict):
        raise ToolError(f"{name}: the arguments must be a JSON object")
    out: dict[str, Any] = {}
    for key, (typ, required) in spec.items():
        value = args.get(key)
        if value is None:
            if required:
                raise ToolError(f"{name}: missing argument {key!r}")
            continue
        if not isinstance(value, typ) or isinstance(value, bool):
            raise ToolError(f"{name}: {key!r} must be {'an integer' if typ is int else 'a string'}")
        out[key] = value
    return out


class Workspace:
    """File and shell tools over ``root``; the only folder the agent may touch."""

    def __init__(
        self,
        root: Path,
        *,
        test_command: str | None = None,
        command_timeout_s: float = 300.0,
        policy: str = "sandbox",
        pass_env: Iterable[str] = (),
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self.test_command = test_command
        self.command_timeout_s = command_timeout_s
        if policy not in sandbox.POLICIES:
            raise ValueError(f"commandPolicy must be one of {sandbox.POLICIES}, not {policy!r}")
        self.policy = policy
        self.pass_env = tuple(pass_env)
        self._proc: subprocess.Popen[bytes] | None = None
        self._launch: sandbox.Launch | None = None
        self._tools: dict[str, Callable[..., str]] = {
            "read_file": self.read_file,
            "list_files": self.list_files,
            "search": self.search,
            "write_file": self.write_file,
            "edit_file": self.edit_file,
            "run_command": self.run_command,
            "finish": self.finish,
        }

    def dispatch(self, name: str, args: Any) -> str:
        """Run one tool call; always text for the model, ``error: ...`` when refused."""
        try:
            checked = check_args(name, args)
            return self._tools[name](**checked)
        except ToolError as exc:
            return f"error: {exc}"
        except OSError as exc:
            where = f" {args.get('path')!r}" if isinstance(args, dict) and args.get("path") else ""
            return f"error: {name}{where}: {exc.strerror or type(exc).__name__}"
        except ValueError as exc:  # e.g. lone surrogates in a path or in content
            return f"error: {name}: {exc}"

    # -- paths --------------------------------------------------------------------------

    def resolve(self, path: str, *, want: str = "any") -> Path:
        """The real absolute path of ``path`` inside the root, or :class:`ToolError`.

        ``want`` is ``"file"``, ``"dir"`` or ``"any"``; an existing path of another kind
        (folder, device, fifo, socket) is refused. A missing path is fine (for writes).
        """
        shown = repr(path[:200])
        if "\0" in path:
            raise ToolError(f"{shown}: paths may not contain NUL")
        if path.startswith("~"):
            raise ToolError(f"{shown}: `~` is not allowed; use a path relative to the project root")
        if os.path.isabs(path):
            raise ToolError(
                f"{shown}: absolute paths are not allowed; use a path relative to the project root"
            )
        parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
        for part in parts:
            if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
                raise ToolError(f"{shown}: a name is longer than {MAX_NAME_BYTES} bytes")
            if part.lower() == ".git":
                raise ToolError(f"{shown}: `.git` is off limits")
        lexical = os.path.normpath(os.path.join(self.root, *parts))
        if not self._inside(lexical):
            raise ToolError(f"{shown} is outside the project root")
        real = os.path.realpath(lexical)  # follows every symlink that exists, dangling ones too
        if not self._inside(real):
            raise ToolError(f"{shown} leads outside the project root (through a symlink)")
        if any(p.lower() == ".git" for p in os.path.relpath(real, self.root).split(os.sep)):
            raise ToolError(f"{shown}: `.git` is off limits")
        try:
            mode = os.stat(real).st_mode
        except FileNotFoundError:
            return Path(real)
        if stat.S_ISDIR(mode):
            if want == "file":
                raise ToolError(f"{shown} is a folder")
        elif stat.S_ISREG(mode):
            if want == "dir":
                raise ToolError(f"{shown} is a file, not a folder")
        else:
            raise ToolError(f"{shown} is not a regular file or folder")
        return Path(real)

    def _inside(self, p: str) -> bool:
        return p == str(self.root) or p.startswith(str(self.root) + os.sep)

    def _rel(self, p: Path | str) -> str:
        return Path(os.path.relpath(p, self.root)).as_posix()

    def _existing(self, path: str, want: str) -> Path:
        real = self.resolve(path, want=want)
        if not os.path.lexists(real):
            raise ToolError(f"{path!r} does not exist")
        return real

    # -- tools --------------------------------------------------------------------------

    def read_file(self, path: str, startLine: int | None = None, endLine: int | None = None) -> str:
        real = self._existing(path, "file")
        data = _read_bytes(real)
        if b"\0" in data[:8192]:
            return f"{self._rel(real)} is a binary file ({len(data)} bytes)"
        lines = [body(x) for x in split_keepends(data.decode("utf-8", "replace"))]
        if not lines:
            return f"{self._rel(real)} is empty"
        start = 1 if startLine is None else startLine
        end = len(lines) if endLine is None else endLine
        if start < 1 or end < start:
            raise ToolError("read_file: need 1 <= startLine <= endLine")
        if start > len(lines):
            raise ToolError(f"read_file: startLine {start} is past the end ({len(lines)} lines)")
        end = min(end, len(lines), start + MAX_READ_LINES - 1)
        out: list[str] = []
        size = 0
        for n in range(start, end + 1):
            row = f"{n:6}\t{lines[n - 1]}"
            if size + len(row) > MAX_READ_CHARS and out:
                end = n - 1
                break
            out.append(row)
            size += len(row) + 1
        if start > 1 or end < len(lines):
            out.append(f"[lines {start}-{end} of {len(lines)}; use startLine/endLine for more]")
        return "\n".join(out)

    def list_files(self, path: str | None = None) -> str:
        real = self._existing(path or ".", "dir")
        found = [
            self._rel(f) + (f" -> {os.readlink(f)}" if os.path.islink(f) else "")
            for f in _walk(real)
        ]
        shown = found[:MAX_LIST]
        if len(found) > MAX_LIST:
            shown.append(f"[... and {len(found) - MAX_LIST} more; list a subfolder]")
        return "\n".join(shown) or "(no files)"

    def search(self, pattern: str, path: str | None = None) -> str:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolError(f"search: bad regular expression: {exc}") from None
        real = self._existing(path or ".", "any")
        hits: list[str] = []
        for f in [str(real)] if real.is_file() else _walk(real):
            try:
                if (
                    not stat.S_ISREG(os.lstat(f).st_mode)
                    or os.path.getsize(f) > MAX_SEARCH_FILE_BYTES
                ):
                    continue
                data = Path(f).read_bytes()
            except OSError:
                continue
            if b"\0" in data[:8192]:
                continue
            for n, line in enumerate(map(body, split_keepends(data.decode("utf-8", "replace"))), 1):
                if regex.search(line):
                    hits.append(f"{self._rel(f)}:{n}: {line[:MAX_MATCH_LINE]}")
                    if len(hits) >= MAX_MATCHES:
                        return "\n".join(
                            hits + [f"[stopped at {MAX_MATCHES} matches; narrow the search]"]
                        )
        return "\n".join(hits) or "no matches"

    def write_file(self, path: str, content: str) -> str:
        real = self.resolve(path, want="file")
        existed = real.exists()
        real.parent.mkdir(parents=True, exist_ok=True)
        if not self._inside(os.path.realpath(real.parent)):  # a folder swapped for a link meanwhile
            raise ToolError(f"{path!r} leads outside the project root")
        note = _write_bytes(real, content.encode("utf-8"))
        return (
            f"{'overwrote' if existed else 'created'} {self._rel(real)} "
            f"({len(content.encode())} bytes){note}"
        )

    def edit_file(self, path: str, oldText: str, newText: str) -> str:
        real = self._existing(path, "file")
        if not oldText:
            raise ToolError(
                "edit_file: oldText must not be empty (use write_file to create a file)"
            )
        try:
            text = _read_bytes(real).decode("utf-8")
        except UnicodeDecodeError:
            raise ToolError(f"edit_file: {path!r} is not UTF-8 text") from None
        count = text.count(oldText)
        if count == 0:
            raise ToolError(
                f"edit_file: oldText was not found in {self._rel(real)}; check whitespace "
                "and indentation (read_file shows the current text, without line numbers)"
            )
        if count > 1:
            raise ToolError(
                f"edit_file: oldText occurs {count} times in {self._rel(real)}; "
                "include more surrounding lines so that it occurs exactly once"
            )
        at = text.index(oldText)
        note = _write_bytes(real, text.replace(oldText, newText, 1).encode("utf-8"))
        first = text.count("\n", 0, at) + 1
        return f"edited {self._rel(real)} (line {first}; {newText.count(chr(10)) + 1} line(s) now){note}"

    def finish(self, summary: str) -> str:
        return summary

    def run_command(self, command: str) -> str:
        if not command.strip():
            raise ToolError("run_command: the command is empty")
        if "\0" in command:
            raise ToolError("run_command: the command may not contain NUL")
        if self.policy == "deny":
            raise ToolError(sandbox.DENIED)
        kind = "none" if self.policy == "allow" else sandbox.available()
        if kind is None:
            raise ToolError(sandbox.UNAVAILABLE)
        link = _link_state(self.root)
        with sandbox.prepare(command, root=self.root, kind=kind, pass_env=self.pass_env) as launch:
            proc = subprocess.Popen(
                launch.argv,
                cwd=self.root,
                env=launch.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            background(proc.pid)  # its session's scheduling group too (it has the host's nice)
            self._proc, self._launch = proc, launch
            out = _CappedReader(proc.stdout)
            try:
                try:
                    code: int | None = proc.wait(timeout=self.command_timeout_s)
                except subprocess.TimeoutExpired:
                    code = None
            finally:
                self.kill_running()  # also whatever the command left in the background
                out.join()
                self._proc = self._launch = None
        head = (
            f"exit code: {code}"
            if code is not None
            else f"timed out after {self.command_timeout_s:g} s; the command and its children were killed"
        )
        note = _restore_link(self.root, link)
        return f"{head}\n{out.text()}".rstrip("\n") + note

    def kill_running(self) -> None:
        """Kill the running command's whole process group (on timeout or cancellation)."""
        proc, launch = self._proc, self._launch
        if proc is None or launch is None:
            return
        launch.stop(proc)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
            pass


class _CappedReader:
    """Drains a pipe in a thread, keeping the head and the tail of the output."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe
        self._out = HeadTail(MAX_OUTPUT_BYTES)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while chunk := self._pipe.read1(65536):
                self._out.add(chunk)
        except (OSError, ValueError):
            pass

    def join(self) -> None:
        # A process that left our group (setsid) may hold the pipe open: then the thread stays
        # blocked until that process ends, and the pipe is left to it (closing would block too).
        self._thread.join(timeout=2)
        if not self._thread.is_alive():
            self._pipe.close()

    def text(self) -> str:
        return self._out.text("omitted")


def _link_state(root: Path) -> bytes | None:
    """The content of the worktree's ``.git`` link file (None when .git is not a file)."""
    try:
        fd = os.open(root / ".git", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return os.read(fd, 65536) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    finally:
        os.close(fd)


def _restore_link(root: Path, content: bytes | None) -> str:
    """Put the worktree's ``.git`` link back if a command changed it (possible under Landlock
    or ``allow``; bubblewrap mounts it read-only). No process of the command is left by now."""
    if content is None or _link_state(root) == content:
        return ""
    link = root / ".git"
    if link.is_dir() and not link.is_symlink():
        import shutil

        shutil.rmtree(link)
    else:
        link.unlink(missing_ok=True)
    fd = os.open(link, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    return (
        "\nnote: the command changed .git, the worktree's link to its repository; it was put "
        "back. Leave .git alone."
    )


def _walk(top: Path) -> Iterator[str]:
    """Every file and symlink under ``top`` (links not followed), sorted, ``.git`` skipped."""
    for dirpath, dirnames, filenames in os.walk(top):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = sorted(d for d in dirnames if d.lower() != ".git" and d not in links)
        for name in sorted([*filenames, *links]):
            if name.lower() != ".git":
                yield os.path.join(dirpath, name)


def _read_bytes(real: Path) -> bytes:
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ToolError("not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise ToolError(f"the file is too large ({st.st_size} bytes)")
        return f.read()


def _write_bytes(real: Path, data: bytes) -> str:
    """Write ``data`` as the new content of ``real`` by replacing its directory entry (temp file
    + rename), keeping its mode; returns a note for the model ("" when there is nothing to say)."""
    try:
        st: os.stat_result | None = os.lstat(real)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ToolError("not a regular file")
    files.write(real, data)  # its bits kept; a new file gets the umask's
    if st is not None and st.st_nlink > 1:
        return (
            " (it was a hard link to another file; the link was replaced, the other file "
            "was not changed)"
        )
    return ""
