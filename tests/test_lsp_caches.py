"""What the server keeps between requests: repository roots by folder, configuration by root.
A burst of delegations shares one lookup; an edited configuration is read again at once."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from handoff.agent import config as config_mod
from handoff.agent import gitops
from handoff.server import settings as settings_mod
from handoff.server.repos import NotInRepository, Repos
from handoff.server.settings import Settings


class FakeServer:
    pass


def counting_lookups(monkeypatch, *, fail: bool = False) -> tuple[list[Path], threading.Event]:
    """``gitops.find_repo_root`` that records its calls and waits until released."""
    calls: list[Path] = []
    release = threading.Event()
    real = gitops.find_repo_root

    def find_repo_root(path: Path) -> Path:
        calls.append(path)
        assert release.wait(30), "never released"
        if fail:
            raise gitops.NotARepository(f"not a git repository: {path}")
        return real(path)

    monkeypatch.setattr(gitops, "find_repo_root", find_repo_root)
    return calls, release


def repos_without_managers(monkeypatch) -> Repos:
    repos = Repos(FakeServer())  # type: ignore[arg-type]

    async def get(root: Path) -> Path:  # the root itself stands for its Repo
        return root

    monkeypatch.setattr(repos, "_get", get)
    return repos


async def until(predicate, what: str) -> None:
    for _ in range(3000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_concurrent_lookups_of_one_folder_share_one(repo: Path, monkeypatch):
    calls, release = counting_lookups(monkeypatch)
    repos = repos_without_managers(monkeypatch)
    files = [repo / f"f{i}.py" for i in range(16)]
    tasks = [asyncio.create_task(repos.for_path(f)) for f in files]
    await until(lambda: calls, "the lookup to start")
    await asyncio.sleep(0.05)  # every caller is waiting by now
    release.set()
    assert await asyncio.gather(*tasks) == [repo] * 16
    assert len(calls) == 1
    assert await repos.for_path(repo / "app.py") == repo and len(calls) == 1  # known now
    (repo / "pkg").mkdir()
    assert await repos.for_path(repo / "pkg", folder=True) == repo and len(calls) == 2  # another key


async def test_a_failed_lookup_reaches_every_caller_and_is_not_kept(tmp_path: Path, monkeypatch):
    calls, release = counting_lookups(monkeypatch, fail=True)
    repos = repos_without_managers(monkeypatch)
    tasks = [asyncio.create_task(repos.for_path(tmp_path / f"f{i}.py")) for i in range(8)]
    await until(lambda: calls, "the lookup to start")
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, NotInRepository) and "not inside a git repository" in str(r)
               for r in results), results
    assert len(calls) == 1
    with pytest.raises(NotInRepository):
        await repos.for_path(tmp_path / "again.py")
    assert len(calls) == 2  # looked up again


async def test_a_cancelled_caller_does_not_cancel_the_others(repo: Path, monkeypatch):
    calls, release = counting_lookups(monkeypatch)
    repos = repos_without_managers(monkeypatch)
    first = asyncio.create_task(repos.for_path(repo / "a.py"))
    second = asyncio.create_task(repos.for_path(repo / "b.py"))
    await until(lambda: calls, "the lookup to start")
    first.cancel()
    release.set()
    assert await second == repo
    with pytest.raises(asyncio.CancelledError):
        await first


# -- configuration ---------------------------------------------------------------------------
def counting_parses(monkeypatch) -> list[Path]:
    parsed: list[Path] = []
    real = config_mod.read_toml

    def read_toml(root: Path, messages: list[str]):
        parsed.append(root)
        return real(root, messages)

    monkeypatch.setattr(config_mod, "read_toml", read_toml)
    return parsed


def test_an_edit_is_seen_at_once_even_with_the_same_size_and_time(tmp_path: Path, monkeypatch):
    parsed = counting_parses(monkeypatch)
    s = Settings(FakeServer())  # type: ignore[arg-type]
    toml = tmp_path / ".handoff.toml"
    toml.write_text("maxSteps = 3\n")
    assert s.load(tmp_path)[0].maxSteps == 3
    st = toml.stat()
    toml.write_text("maxSteps = 4\n")  # same size; within the timestamps' granularity
    os.utime(toml, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime
    assert s.load(tmp_path)[0].maxSteps == 4
    assert len(parsed) == 2


def test_an_unchanged_configuration_is_parsed_once(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(settings_mod, "RACY_NS", 0)  # no wait for the files to be old enough
    parsed = counting_parses(monkeypatch)
    s = Settings(FakeServer())  # type: ignore[arg-type]
    toml = tmp_path / ".handoff.toml"
    toml.write_text("maxSteps = 3\nnotAKey = 1\n")
    cfg, messages = s.load(tmp_path)
    again, messages_again = s.load(tmp_path)
    assert (cfg.maxSteps, again.maxSteps, len(parsed)) == (3, 3, 1)
    assert messages == messages_again and "notAKey" in messages[0]
    assert again is not cfg and again.todo is not cfg.todo  # copies: nobody shares one
    again.agents["x"] = config_mod.AgentSpec("x", command=["x"])
    assert s.load(tmp_path)[0].agents == {}

    toml.write_text("maxSteps = 5\nnotAKey = 1\n")  # the file
    assert s.load(tmp_path)[0].maxSteps == 5
    (tmp_path / "pyproject.toml").write_text("[tool.handoff]\nmaxSteps = 9\n")  # another file
    assert s.load(tmp_path)[0].maxSteps == 5  # .handoff.toml wins, but it was read again
    toml.unlink()
    assert s.load(tmp_path)[0].maxSteps == 9
    s.pulled = {"": {"maxSteps": 11}}  # the editor's settings
    assert s.load(tmp_path)[0].maxSteps == 11
    monkeypatch.setenv("HANDOFF_MODEL", "openai/other")  # the environment
    assert s.load(tmp_path)[0].model == "openai/other"
    assert len(parsed) == 6
    assert s.load(tmp_path)[0].maxSteps == 11 and len(parsed) == 6


def test_a_recent_file_is_not_kept(tmp_path: Path, monkeypatch):
    parsed = counting_parses(monkeypatch)
    s = Settings(FakeServer())  # type: ignore[arg-type]
    toml = tmp_path / ".handoff.toml"
    toml.write_text("maxSteps = 3\n")
    s.load(tmp_path)
    s.load(tmp_path)
    assert len(parsed) == 2  # written just now: it may change again unseen, so read each time
    # An mtime set into the past (touch -d, cp -p, rsync -t) does not make it old: its ctime
    # still says when it changed.
    st = toml.stat()
    os.utime(toml, ns=(st.st_atime_ns - 10**11, st.st_mtime_ns - 10**11))
    s.load(tmp_path)
    s.load(tmp_path)
    assert len(parsed) == 4
