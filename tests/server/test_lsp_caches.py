"""What the server keeps between requests: repository roots by folder (a burst of delegations
shares one lookup in the daemon); and the daemon reads an edited configuration again at once."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from handoff.agent import protocol
from handoff.agent.client import DaemonClient, RemoteError, client_env
from handoff.server.repos import NotInRepository, Repo, Repos


class FakeServer:
    pass


def counting_lookups(
    monkeypatch, repos: Repos, *, fail: bool = False
) -> tuple[list[Path], threading.Event]:
    """The daemon's ``openRepo`` as this front asks for it, recorded, answered when released."""
    calls: list[Path] = []
    release = threading.Event()

    async def open_repo(path: Path) -> Path:
        calls.append(path)
        while not release.is_set():
            await asyncio.sleep(0.01)
        if fail:
            raise RemoteError(f"not a git repository: {path}", protocol.NOT_A_REPOSITORY)
        root = path if path.is_dir() and (path / ".git").exists() else path.parent
        while not (root / ".git").exists():
            root = root.parent
        repos._repos.setdefault(root, Repo(root))
        return root

    monkeypatch.setattr(repos, "_open", open_repo)
    return calls, release


async def until(predicate, what: str) -> None:
    for _ in range(3000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_concurrent_lookups_of_one_folder_share_one(repo: Path, monkeypatch):
    repos = Repos(FakeServer())  # type: ignore[arg-type]
    calls, release = counting_lookups(monkeypatch, repos)
    files = [repo / f"f{i}.py" for i in range(16)]
    tasks = [asyncio.create_task(repos.for_path(f)) for f in files]
    await until(lambda: calls, "the lookup to start")
    await asyncio.sleep(0.05)  # every caller is waiting by now
    release.set()
    assert [r.root for r in await asyncio.gather(*tasks)] == [repo] * 16
    assert len(calls) == 1
    assert (await repos.for_path(repo / "app.py")).root == repo and len(calls) == 1  # known now
    (repo / "pkg").mkdir()
    assert (await repos.for_path(repo / "pkg", folder=True)).root == repo and len(
        calls
    ) == 2  # another key


async def test_a_failed_lookup_reaches_every_caller_and_is_not_kept(tmp_path: Path, monkeypatch):
    repos = Repos(FakeServer())  # type: ignore[arg-type]
    calls, release = counting_lookups(monkeypatch, repos, fail=True)
    tasks = [asyncio.create_task(repos.for_path(tmp_path / f"f{i}.py")) for i in range(8)]
    await until(lambda: calls, "the lookup to start")
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(
        isinstance(r, NotInRepository) and "not inside a git repository" in str(r) for r in results
    ), results
    assert len(calls) == 1
    with pytest.raises(NotInRepository):
        await repos.for_path(tmp_path / "again.py")
    assert len(calls) == 2  # looked up again


async def test_a_cancelled_caller_does_not_cancel_the_others(repo: Path, monkeypatch):
    repos = Repos(FakeServer())  # type: ignore[arg-type]
    calls, release = counting_lookups(monkeypatch, repos)
    first = asyncio.create_task(repos.for_path(repo / "a.py"))
    second = asyncio.create_task(repos.for_path(repo / "b.py"))
    await until(lambda: calls, "the lookup to start")
    first.cancel()
    release.set()
    assert (await second).root == repo
    with pytest.raises(asyncio.CancelledError):
        await first


# -- configuration ---------------------------------------------------------------------------
async def test_an_edit_is_seen_at_once_even_with_the_same_size_and_time(repo: Path):
    client = DaemonClient()
    await client.connect()
    try:

        async def max_steps() -> int:
            result = await client.call(
                protocol.CONFIG, {"root": str(repo), "env": client_env(), "overrides": []}
            )
            return result["config"]["maxSteps"]

        toml = repo / ".handoff.toml"
        toml.write_text("maxSteps = 3\n")
        assert await max_steps() == 3
        st = toml.stat()
        toml.write_text("maxSteps = 4\n")  # same size; within the timestamps' granularity
        os.utime(toml, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime
        assert await max_steps() == 4
        result = await client.call(
            protocol.CONFIG,
            {"root": str(repo), "env": client_env(), "overrides": [["editor", {"maxSteps": 11}]]},
        )
        assert result["config"]["maxSteps"] == 11  # the editor's settings win
    finally:
        await client.close()
