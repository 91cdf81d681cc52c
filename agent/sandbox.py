"""Confinement of the built-in agent's ``run_command`` and the environment of agent processes.

``commandPolicy`` (configuration) decides how ``run_command`` runs:

- ``sandbox`` (default): in bubblewrap when it works here, else under Landlock (ABI >= 6);
  when neither can be had the command is refused with :data:`UNAVAILABLE`.
- ``allow``: unconfined, with the developer's rights (still a scrubbed environment, closed
  stdin, its own process group, a time limit).
- ``deny``: never run; the model is told so.

Inside the sandbox the worktree is writable and everything else is read-only; the home
folders, ``/tmp``, ``/var/tmp``, ``/run`` and Handoff's state folder are hidden (bubblewrap: an
empty read-only tmpfs, a fresh writable one for ``/tmp``; Landlock: not readable, and a
private TMPDIR); the repository's git folder stays readable so that
``git status``/``git diff`` work, but its ``config`` (remote URLs with tokens, credential
helpers, ``http.extraHeader``) is replaced by a copy with only ``core.*``/``extensions.*``;
the worktree's ``.git`` link is read-only; there is no network; processes outside cannot be
seen or signalled; and every process the command started dies with it.

Landlock itself (syscalls, the helper process) is in :mod:`.landlock`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from . import landlock
from .gitenv import AGENT_VARS
from .processes import in_background_group
from .secrets import is_secret_name

POLICIES = ("sandbox", "allow", "deny")
MIN_LANDLOCK_ABI = landlock.MIN_ABI

UNAVAILABLE = (
    'run_command is not available: commandPolicy is "sandbox" but no sandbox can be had on this '
    "machine (bubblewrap is missing or cannot create namespaces, and Landlock ABI 6 is not "
    "available). The developer can install bubblewrap (Debian/Ubuntu: `apt install bubblewrap`, "
    "Fedora: `dnf install bubblewrap`, Arch: `pacman -S bubblewrap`) or set "
    'commandPolicy = "allow" to run commands unconfined. Continue without running commands.'
)
DENIED = (
    'run_command is disabled by the project\'s configuration (commandPolicy = "deny"). '
    "Continue without running commands; say in your summary what should be run to check the work."
)

# Environment variables that carry credentials (.secrets.is_secret_name: whole name parts) are
# never passed to an agent process unless the configuration names them in `passEnv`.
# Variables that would point git (run by an agent in its worktree) elsewhere: .gitenv.
COMMAND_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ")

# git config keys a sandboxed git needs to read the repository; everything else is left out
_GIT_CONFIG_KEEP = re.compile(
    r"^(extensions\.[^.]+|core\.(repositoryformatversion|bare|filemode|symlinks|ignorecase|"
    r"precomposeunicode|autocrlf|eol|safecrlf|quotepath|checkstat|trustctime))$"
)


def agent_env(
    base: Mapping[str, str], pass_env: Iterable[str] = (), extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a command agent: ours without credentials and without variables
    that redirect git, plus the names ``pass_env`` lists, plus ``extra``."""
    keep = set(pass_env)
    env = {k: v for k, v in base.items() if k in keep or not (is_secret_name(k) or k in AGENT_VARS)}
    env.update(extra or {})
    return env


def command_env(
    base: Mapping[str, str], pass_env: Iterable[str], *, home: str, tmp: str
) -> dict[str, str]:
    """The environment of ``run_command``: a few harmless variables, the ``pass_env`` names,
    a private HOME and TMPDIR."""
    env = {k: base[k] for k in COMMAND_ENV if k in base and not is_secret_name(k)}
    env.setdefault("PATH", os.defpath)
    env.update({k: base[k] for k in pass_env if k in base})
    env.update(HOME=home, TMPDIR=tmp)
    return env


# -- which sandbox ------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _bwrap_works(bwrap: str) -> bool:
    try:
        proc = subprocess.run(
            [
                bwrap,
                *_BWRAP_BASE,
                "--ro-bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
                "--tmpfs",
                "/tmp",
                "--",
                "/bin/sh",
                "-c",
                "exit 0",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def landlock_abi() -> int:
    """The Landlock ABI of the running kernel; 0 when Landlock is unavailable."""
    return landlock.abi_version()


def available() -> str | None:
    """``"bubblewrap"``, ``"landlock"`` or None: the confinement ``sandbox`` gets here."""
    bwrap = shutil.which("bwrap")
    if bwrap and _bwrap_works(bwrap):
        return "bubblewrap"
    if landlock_abi() >= MIN_LANDLOCK_ABI:
        return "landlock"
    return None


# -- launching ------------------------------------------------------------------------------

# No --new-session: the launcher starts bwrap in a session of its own already (so the sandbox
# has no controlling terminal to inject input into), and a second session would be a new
# scheduling group at normal priority, out of reach of processes.background.
_BWRAP_BASE = ("--die-with-parent", "--unshare-all", "--cap-drop", "ALL")


@dataclasses.dataclass
class Launch:
    """How to start one confined command: ``Popen(argv, env=env, cwd=root,
    start_new_session=True)``, then :meth:`stop` to end it and everything it started."""

    kind: str  # "bubblewrap", "landlock" or "none"
    argv: list[str]
    env: dict[str, str]

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if self.kind == "landlock" and proc.poll() is None:
            # the helper kills every process the command started (it is their subreaper)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=3)
        # bubblewrap: the sandbox's pid namespace dies with its first process
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def _real_dirs(paths: Iterable[str | None]) -> list[str]:
    out: list[str] = []
    for p in paths:
        if not p:
            continue
        real = os.path.realpath(p)
        if real != "/" and os.path.isdir(real) and real not in out:
            out.append(real)
    return out


def _under(p: str, top: str) -> bool:
    return p == top or p.startswith(top.rstrip("/") + "/")


def hidden_paths() -> list[str]:
    """Folders a sandboxed command must not see: homes, temporary folders, /run, our state;
    outer ones first (a home inside /tmp is listed after /tmp)."""
    from .store import state_root

    found = _real_dirs(
        [
            os.path.expanduser("~"),
            os.environ.get("HOME"),
            "/root",
            "/home",
            "/tmp",
            "/var/tmp",
            "/run",
            str(state_root()),
        ]
    )
    return sorted(found, key=lambda p: (p.count("/"), p))


def _sanitized_git_config(config: Path) -> str:
    from . import gitops

    lines: dict[str, list[str]] = {}
    try:
        entries = gitops.config_entries(config)
    except gitops.GitError:
        entries = [("core.repositoryformatversion", "0")]
    for key, value in entries:
        if _GIT_CONFIG_KEEP.match(key):
            section, _, name = key.partition(".")
            quoted = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            lines.setdefault(section, []).append(f'\t{name} = "{quoted}"')
    return "".join(f"[{section}]\n" + "\n".join(body) + "\n" for section, body in lines.items())


def _git_dirs(root: Path) -> tuple[str | None, str | None]:
    """(the repository's common git folder, its config file) when ``root`` is in git."""
    from . import gitops

    try:
        common = gitops.common_dir(root)
    except gitops.GitError:
        return None, None
    if common is None or not common.is_dir():
        return None, None
    real = os.path.realpath(common)
    config = os.path.join(real, "config")
    return real, config if os.path.isfile(config) else None


@contextlib.contextmanager
def prepare(
    command: str,
    *,
    root: Path,
    kind: str,
    pass_env: Iterable[str] = (),
    base_env: Mapping[str, str] | None = None,
) -> Iterator[Launch]:
    """A :class:`Launch` for ``sh -c command`` in ``root``; its scratch folder (private HOME
    and TMPDIR, sanitized git config) is removed on exit. Its argv lowers the scheduling group
    of the session it is started in before anything else runs
    (``processes.in_background_group``)."""
    root_s = os.path.realpath(root)
    base = os.environ if base_env is None else base_env
    scratch = tempfile.mkdtemp(prefix="handoff-cmd-")
    try:
        shell = ["/bin/sh", "-c", command]
        if kind == "bubblewrap":
            launch = _bwrap_launch(shell, root_s, scratch, base, pass_env)
        elif kind == "landlock":
            launch = _landlock_launch(shell, root_s, scratch, base, pass_env)
        elif kind == "none":
            home, tmp = os.path.join(scratch, "home"), os.path.join(scratch, "tmp")
            os.mkdir(home)
            os.mkdir(tmp)
            launch = Launch("none", shell, command_env(base, pass_env, home=home, tmp=tmp))
        else:
            raise ValueError(f"unknown sandbox kind {kind!r}")
        launch.argv = in_background_group(launch.argv)
        yield launch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _bwrap_launch(
    shell: list[str], root: str, scratch: str, base: Mapping[str, str], pass_env: Iterable[str]
) -> Launch:
    bwrap = shutil.which("bwrap") or "bwrap"
    home = f"/tmp/handoff-home-{secrets.token_hex(4)}"
    argv = [bwrap, *_BWRAP_BASE, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    hidden = hidden_paths()
    for folder in hidden:
        argv += ["--tmpfs", folder]
    argv += ["--bind", root, root]
    link = os.path.join(root, ".git")
    if os.path.lexists(link):
        argv += ["--ro-bind", link, link]
    common, config = _git_dirs(Path(root))
    if common:
        argv += ["--ro-bind", common, common]
        if config:
            clean = os.path.join(scratch, "gitconfig")
            Path(clean).write_text(_sanitized_git_config(Path(config)), encoding="utf-8")
            argv += ["--ro-bind", clean, config]
    argv += ["--dir", home]
    for folder in hidden:  # empty and read-only, except a fresh /tmp
        if folder != "/tmp":
            argv += ["--remount-ro", folder]
    argv += ["--chdir", root, "--", *shell]
    return Launch("bubblewrap", argv, command_env(base, pass_env, home=home, tmp="/tmp"))


def _landlock_launch(
    shell: list[str], root: str, scratch: str, base: Mapping[str, str], pass_env: Iterable[str]
) -> Launch:
    home, tmp = os.path.join(scratch, "home"), os.path.join(scratch, "tmp")
    os.mkdir(home)
    os.mkdir(tmp)
    hidden = hidden_paths()
    common, config = _git_dirs(Path(root))
    secret_files = [config] if config else []
    # Landlock lets a process read /proc/<pid>/environ of others: no pid folder is granted
    # (the command gets its own, see landlock.restrict)
    processes = [f"/proc/{n}" for n in os.listdir("/proc") if n.isdigit()]
    readable = _complement("/", hidden + secret_files + processes)
    if common:
        readable += _complement(common, secret_files)
    spec = {
        "read": readable,
        "write": [root, scratch],
        "devices": [
            d
            for d in (
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/tty",
            )
            if os.path.exists(d)
        ],
    }
    spec_file = os.path.join(scratch, "landlock.json")
    Path(spec_file).write_text(json.dumps(spec), encoding="utf-8")
    argv = [
        sys.executable,
        "-I",
        "-S",
        os.path.abspath(landlock.__file__),
        "--landlock",
        spec_file,
        "--",
        *shell,
    ]
    return Launch("landlock", argv, command_env(base, pass_env, home=home, tmp=tmp))


def _complement(top: str, hidden: list[str]) -> list[str]:
    """Paths that together cover ``top`` except everything in ``hidden`` (real paths)."""
    hidden = [os.path.realpath(h) for h in hidden]

    def related(p: str) -> bool:  # hidden itself, inside hidden, or holding something hidden
        return any(_under(p, h) or _under(h, p) for h in hidden)

    if not related(top):
        return [top]
    out: list[str] = []
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            path = entry.path
            if entry.is_symlink():
                # a link is granted as its target: never one that leads to something hidden
                if not related(os.path.realpath(path)):
                    out.append(path)
            elif any(_under(path, h) for h in hidden):
                continue
            elif related(path):
                if entry.is_dir(follow_symlinks=False):
                    stack.append(path)
            else:
                out.append(path)
    return out
