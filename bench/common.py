"""Shared pieces of the benchmarks: sizes, paths, environment, statistics, generated repositories.

Nothing here imports the server or the agent core, so a benchmark decides itself what it loads
into the bench process (the client side) and what runs in the server process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from handoff.agent.gitenv import REPOSITORY_VARS

ROOT = Path(__file__).resolve().parent.parent  # the project
BENCH = ROOT / "bench"
OUT = BENCH / "out"
CACHE = OUT / "cache"  # generated repositories, reused across runs
VENV_BIN = Path(sys.executable).parent
REPO_FORMAT = 2  # bump when the generator changes: cached repositories are rebuilt

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each benchmark is; ``quick`` keeps the whole suite well under a minute."""

    quick: bool
    startup_runs: int  # per server, interleaved
    latency_samples: int  # per condition, codeAction and listSessions alternating
    latency_sessions: int  # sessions running under load (half command, half built-in)
    model_delay_s: float  # the scripted model's answer time per step
    big_files: int  # the handoff-cost repository
    handoff_runs: int  # interleaved pairs (delegate, bare worktree add)
    medium_files: int  # the repository of the latency, apply and scale benchmarks
    apply_files: int
    apply_runs: int
    scale_sessions: int
    scale_parallel: int
    warmup: bool = True  # one untimed run first (page cache, .pyc files)
    linger_s: float = 3.0  # how long an idle server is watched for a litellm import
    daemon_sessions: int = 16  # ready sessions in the daemon benchmark's repository
    daemon_events: int = 150  # follow-ups timed from the daemon's event to the editor's list
    ls_warm_runs: int = 20  # `handoff ls` with the daemon running
    ls_cold_runs: int = 5  # `handoff ls` starting the daemon

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            False,
            startup_runs=10,
            latency_samples=1000,
            latency_sessions=16,
            model_delay_s=0.5,
            big_files=20_000,
            handoff_runs=5,
            medium_files=1_000,
            apply_files=50,
            apply_runs=5,
            scale_sessions=64,
            scale_parallel=8,
        )

    @classmethod
    def small(cls) -> Sizes:
        return cls(
            True,
            startup_runs=1,
            latency_samples=20,
            latency_sessions=4,
            model_delay_s=0.1,
            big_files=500,
            handoff_runs=1,
            medium_files=200,
            apply_files=50,
            apply_runs=1,
            scale_sessions=8,
            scale_parallel=4,
            warmup=False,
            linger_s=1.0,
            daemon_sessions=3,
            daemon_events=4,
            ls_warm_runs=2,
            ls_cold_runs=1,
        )


# -- environment ------------------------------------------------------------------------------


def server_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment a server runs in: a private state dir, a git identity, no model settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HANDOFF_") and k not in REPOSITORY_VARS
    }
    env.update(GIT_ENV)
    env["HANDOFF_STATE_DIR"] = str(state_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def git(
    cwd: Path,
    *args: str,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> str:
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV, **(env or {})},
        input=input,
        capture_output=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"git {' '.join(args)} failed in {cwd}: {proc.stderr.decode(errors='replace')}"
        )
    return proc.stdout.decode(errors="replace")


# -- statistics -------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank on the sorted values, linear between ranks)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "min": min(values),
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "p99": pct(values, 99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def rss_mb(pid: int) -> dict[str, float]:
    """Resident memory of a process now and at its peak (VmHWM), in MB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return {"rss_mb": out.get("VmRSS", float("nan")), "peak_rss_mb": out.get("VmHWM", float("nan"))}


def child_pid(pid: int, marker: bytes) -> int | None:
    """The first child process of ``pid`` whose ``/proc/<pid>/cmdline`` contains ``marker``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and marker in (entry / "cmdline").read_bytes():
                return int(entry.name)
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    return None


class CpuMeter:
    """Share of all CPUs busy (any process) between ``start()`` and ``stop()``, from /proc/stat,
    with the 1-minute load average: how loaded the machine was while something was measured."""

    def __init__(self) -> None:
        self._t0: tuple[int, int] | None = None

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    def start(self) -> CpuMeter:
        self._t0 = self._read()
        return self

    def stop(self) -> dict[str, float]:
        total, idle = self._read()
        t0, i0 = self._t0 or (total, idle)
        busy = 1 - (idle - i0) / max(1, total - t0)
        return {"cpu_busy_pct": round(100 * busy, 1), "load_avg_1m": round(os.getloadavg()[0], 2)}


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its reaped children (git calls included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


async def wait_quiet(
    pid: int, *, share: float = 0.05, window: float = 0.5, timeout: float = 120.0
) -> float:
    """Until the process uses less than ``share`` of a CPU over ``window`` s; returns how long it took."""
    import asyncio

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        c0 = cpu_seconds(pid)
        await asyncio.sleep(window)
        if cpu_seconds(pid) - c0 < share * window:
            break
    return time.monotonic() - t0


async def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


# -- generated repositories -------------------------------------------------------------------

_WORDS = (
    "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega value index count "
    "total result buffer stream token parser config session worker queue state record"
).split()


def _file_text(rng: random.Random, n: int, size: int) -> str:
    """About ``size`` bytes of Python-looking text, different in every file."""
    lines = [f'"""Module {n}: generated for the Handoff benchmarks."""\n', "\n"]
    total, i = 60, 0
    while total < size:
        a, b = rng.choice(_WORDS), rng.choice(_WORDS)
        line = (
            f"def {a}_{b}_{n}_{i}(x, y={rng.randint(0, 999)}):\n"
            f"    return x * {rng.randint(1, 99)} + y  # {a} {b} {rng.random():.6f}\n\n"
        )
        lines.append(line)
        total += len(line)
        i += 1
    return "".join(lines)


def repo_files(n_files: int) -> list[str]:
    """Repository-relative paths of a generated repository: 100 files a folder, two levels."""
    return [f"pkg{i // 1000:02d}/mod{(i // 100) % 10}/file{i:05d}.py" for i in range(n_files)]


def generated_repo(n_files: int, *, file_size: int = 4000, log=print) -> Path:
    """A cached repository of ``n_files`` text files (~``file_size`` bytes each), one commit, plus
    dirty state: modified tracked files, a staged change, untracked files. Built once, reused."""
    root = CACHE / f"repo-{n_files}"
    meta = CACHE / f"repo-{n_files}.json"
    want = {"format": REPO_FORMAT, "files": n_files, "file_size": file_size}
    if meta.exists() and root.is_dir():
        try:
            if json.loads(meta.read_text()) == want:
                reset_repo(root)
                return root
        except (OSError, json.JSONDecodeError):
            pass
    log(f"generating a repository of {n_files} files into {root} (once)...")
    started = time.monotonic()
    shutil.rmtree(root, ignore_errors=True)
    meta.unlink(missing_ok=True)
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    rng = random.Random(n_files)
    for n, rel in enumerate(repo_files(n_files)):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_file_text(rng, n, file_size))
    (root / "README.md").write_text("# generated\n\nTODO(agent): nothing, this is a benchmark.\n")
    (root / ".gitignore").write_text("*.log\n__pycache__/\n")
    git(root, "add", "-A")
    git(root, "-c", "gc.auto=0", "commit", "-q", "-m", "generated")
    git(root, "gc", "-q")  # packed, as a real clone is
    files = repo_files(n_files)
    # What the developer has not committed: the snapshot must carry all of it.
    for rel in files[1 : n_files : max(1, n_files // 20)][:20]:  # 20 modified tracked files
        p = root / rel
        p.write_text(p.read_text() + "\n# unsaved work of the developer\n")
    staged = root / files[2]
    staged.write_text(staged.read_text() + "\n# a staged change\n")
    git(root, "add", files[2])
    for i in range(10):  # untracked, not ignored
        (root / f"notes/new{i}.py").parent.mkdir(exist_ok=True)
        (root / f"notes/new{i}.py").write_text(f"# new file {i}\n" * 50)
    (root / "debug.log").write_text("ignored\n")
    meta.write_text(json.dumps(want))
    log(f"  generated in {time.monotonic() - started:.1f} s ({du_mb(root):.0f} MB on disk)")
    return root


def reset_repo(root: Path) -> None:
    """Forget what earlier (possibly interrupted) runs left: worktrees, handoff/bench branches, refs."""
    git(root, "worktree", "prune")
    for line in git(root, "worktree", "list", "--porcelain").split("\n\n")[1:]:
        if line.startswith("worktree "):
            path = line.splitlines()[0][len("worktree ") :]
            git(root, "worktree", "remove", "--force", "--force", path, check=False)
            shutil.rmtree(path, ignore_errors=True)
    git(root, "worktree", "prune")
    refs = git(
        root,
        "for-each-ref",
        "--format=%(refname)",
        "refs/handoff",
        "refs/heads/handoff",
        "refs/heads/bench",
    ).split()
    if refs:
        git(root, "update-ref", "--stdin", input="".join(f"delete {r}\n" for r in refs).encode())


def _block_stat(path: Path) -> Path | None:
    """/sys/dev/block/<major>:<minor>/stat of the disk holding ``path`` (None on tmpfs)."""
    dev = os.stat(path).st_dev
    stat = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")
    return stat if stat.exists() else None


def on_disk(path: Path) -> bool:
    """Whether ``path`` is on a block device (not tmpfs)."""
    return _block_stat(path) is not None


def quiet_disk(path: Path, *, still_s: float = 1.0, timeout_s: float = 60.0) -> float:
    """``sync``, then wait until the disk holding ``path`` has written and discarded nothing
    for ``still_s`` (an ext4 mounted with ``discard`` trims what a removal freed after ``sync``
    returns, and the journal writes on; a measurement started then pays for the one before).
    Returns the seconds waited."""
    t0 = time.monotonic()
    os.sync()
    stat = _block_stat(path)
    if stat is None:
        time.sleep(0.2)
        return time.monotonic() - t0

    def busy() -> tuple[str, ...]:
        f = stat.read_text().split()
        return (f[6], f[8], f[13] if len(f) > 13 else "")  # sectors written, in flight, discarded

    last, since = busy(), time.monotonic()
    while time.monotonic() - since < still_s and time.monotonic() - t0 < timeout_s:
        time.sleep(0.1)
        now = busy()
        if now != last or now[1] != "0":
            last, since = now, time.monotonic()
    return time.monotonic() - t0


def du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True).stdout
    return int(out.split()[0]) / 1024 if out else float("nan")


def tracked_size_mb(root: Path) -> float:
    """Bytes of the tracked files at HEAD (what a checkout writes)."""
    out = git(root, "ls-tree", "-r", "-l", "HEAD")
    return sum(int(line.split()[3]) for line in out.splitlines() if line.split()[3].isdigit()) / 1e6


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    git_version = subprocess.run(
        ["git", "--version"], capture_output=True, text=True
    ).stdout.strip()
    try:
        fs = (
            subprocess.run(["df", "-T", str(OUT)], capture_output=True, text=True)
            .stdout.splitlines()[-1]
            .split()[1]
        )
    except (IndexError, OSError):
        fs = "?"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": os.uname().release,
        "git": git_version,
        "python": sys.version.split()[0],
        "filesystem": fs,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
