"""commandPolicy, sandbox selection and properties, environment scrubbing, hard links.

The attempts to get out are in test_escape.py; here: what each policy does, which sandbox is
chosen when, what a confined command can still do (its worktree, git status, a fresh /tmp),
and which environment every agent process gets.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from handoff.agent import config as config_mod
from handoff.agent import gitops, sandbox
from handoff.agent.backends.tools import Workspace
from handoff.agent.manager import DelegateRequest, SessionManager
from handoff.agent.secrets import is_secret_name
from handoff.agent.session import State

from tests.support.agents import processes_with, toml_agents, trust_repo, write_agent
from tests.support.git import git
from tests.support.sandboxes import kinds


@pytest.fixture
def worktree(repo: Path, state_dir: Path) -> Path:
    """A session-like worktree of ``repo`` under the state folder."""
    path = state_dir / "repos" / "r" / "worktrees" / "s1"
    gitops.add_worktree(
        repo, path, branch="handoff/s1", commit=git(repo, "rev-parse", "HEAD").strip()
    )
    return path


def no_bwrap_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", f"{empty}:/usr/bin/nonexistent")


# -- which sandbox, and when there is none ----------------------------------------------------


def test_bubblewrap_is_what_this_machine_uses() -> None:
    assert sandbox.available() == "bubblewrap", (
        "bubblewrap is missing or cannot create namespaces here: `apt-get install bubblewrap` "
        "(CI: add it to the Debian packages .ci/run installs)"
    )


def test_landlock_when_bubblewrap_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if sandbox.landlock_abi() < sandbox.MIN_LANDLOCK_ABI:
        pytest.skip(f"Landlock ABI {sandbox.landlock_abi()} here")
    no_bwrap_on_path(monkeypatch, tmp_path)
    assert sandbox.available() == "landlock"


def test_landlock_when_bubblewrap_cannot_make_namespaces(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if sandbox.landlock_abi() < sandbox.MIN_LANDLOCK_ABI:
        pytest.skip(f"Landlock ABI {sandbox.landlock_abi()} here")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "bwrap").write_text(
        "#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n"
    )
    (fake / "bwrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    assert sandbox.available() == "landlock"


def test_no_sandbox_at_all_refuses_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repo: Path
) -> None:
    no_bwrap_on_path(monkeypatch, tmp_path)
    monkeypatch.setattr(sandbox, "landlock_abi", lambda: 0)
    assert sandbox.available() is None
    out = Workspace(repo).dispatch("run_command", {"command": "touch made.txt"})
    assert out == "error: " + sandbox.UNAVAILABLE
    assert "apt install bubblewrap" in out and 'commandPolicy = "allow"' in out
    assert not (repo / "made.txt").exists()


def test_deny_policy_refuses_every_command(repo: Path) -> None:
    out = Workspace(repo, policy="deny").dispatch("run_command", {"command": "touch made.txt"})
    assert out == "error: " + sandbox.DENIED
    assert 'commandPolicy = "deny"' in out
    assert not (repo / "made.txt").exists()


def test_allow_policy_runs_with_the_developers_rights(repo: Path, tmp_path: Path) -> None:
    out = Workspace(repo, policy="allow").dispatch(
        "run_command", {"command": f"echo reachable > {tmp_path}/outside.txt"}
    )
    assert out == "exit code: 0"
    assert (tmp_path / "outside.txt").read_text() == "reachable\n"  # as documented: unconfined


def test_unknown_policy_is_a_programming_error(repo: Path) -> None:
    with pytest.raises(ValueError, match="commandPolicy"):
        Workspace(repo, policy="maybe")


# -- configuration ----------------------------------------------------------------------------


def test_config_keys(repo: Path) -> None:
    (repo / ".handoff.toml").write_text(
        'commandPolicy = "deny"\npassEnv = ["NPM_TOKEN"]\n'
        '[agents.claude]\ncommand = ["claude", "-p", "{task}"]\npassEnv = ["ANTHROPIC_API_KEY"]\n'
    )
    trust_repo(repo)
    cfg, messages = config_mod.load(repo)
    assert messages == []
    assert cfg.commandPolicy == "deny" and cfg.passEnv == ["NPM_TOKEN"]
    assert cfg.agents["claude"].passEnv == ["ANTHROPIC_API_KEY"]
    # later sources win, as for every key
    cfg, _ = config_mod.load(
        repo, overrides=[("initializationOptions", {"commandPolicy": "allow"})]
    )
    assert cfg.commandPolicy == "allow"


def test_bad_config_values_fall_back_with_a_message(repo: Path) -> None:
    (repo / ".handoff.toml").write_text(
        'commandPolicy = "yolo"\npassEnv = "NOT VALID"\n'
        '[agents.a]\ncommand = ["a"]\npassEnv = [1]\n'
    )
    trust_repo(repo)
    cfg, messages = config_mod.load(repo)
    assert cfg.commandPolicy == "sandbox" and cfg.passEnv == [] and cfg.agents["a"].passEnv == []
    assert messages == [
        '.handoff.toml: `commandPolicy` must be one of "sandbox", "allow", "deny"; using the default',
        ".handoff.toml: `passEnv` must be a list of environment variable names; using the default",
        ".handoff.toml: agent `a`: `passEnv` must be a list of environment variable names; passing none",
    ]


# -- what a confined command can do -----------------------------------------------------------


@pytest.mark.parametrize("kind", kinds())
def test_confined_command_works_in_its_worktree(
    kind: str, worktree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "available", lambda: kind)
    ws = Workspace(worktree, command_timeout_s=20)
    out = ws.dispatch(
        "run_command",
        {
            "command": (
                "mkdir -p pkg && echo 'x = 1' > pkg/mod.py && python3 -c 'import pkg.mod; print(pkg.mod.x)' "
                '&& echo tmp > "$TMPDIR/scratch" && cat "$TMPDIR/scratch" && test -w "$HOME" && echo home-ok'
            )
        },
    )
    assert out == "exit code: 0\n1\ntmp\nhome-ok"
    assert (worktree / "pkg" / "mod.py").read_text() == "x = 1\n"
    status = ws.dispatch("run_command", {"command": "git status --porcelain"})
    if kind == "bubblewrap":  # the git folder is readable (config sanitized), not writable
        assert status == "exit code: 0\n?? pkg/"
    else:  # Landlock cannot swap the config for a clean copy: it stays unreadable
        assert status.startswith("exit code: 128") and "Permission denied" in status
    assert gitops.commit_worktree(worktree, "result")  # Handoff itself still can


def test_sanitized_git_config(repo: Path, worktree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "available", lambda: "bubblewrap")
    git(repo, "config", "remote.origin.url", "https://user:tok3n@example.invalid/r.git")
    git(repo, "config", "credential.helper", "store")
    git(repo, "config", "core.sshCommand", "ssh -i /secret/key")
    out = Workspace(worktree).dispatch(
        "run_command",
        {
            "command": (
                'cat "$(git rev-parse --git-common-dir)/config"; git config --list --show-origin | grep -c .'
            )
        },
    )
    assert "tok3n" not in out and "credential" not in out and "sshCommand" not in out.lower()
    assert '\trepositoryformatversion = "0"' in out


@pytest.mark.parametrize("kind", kinds())
def test_timeout_and_background_processes_die_with_the_command(
    kind: str, worktree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "available", lambda: kind)
    mark = f"200.{os.getpid()}{len(kind)}"
    ws = Workspace(worktree, command_timeout_s=1)
    started = time.monotonic()
    out = ws.dispatch(
        "run_command",
        {"command": (f"sleep {mark} & setsid sleep {mark} & (sleep {mark} &) ; sleep {mark}")},
    )
    assert out.startswith("timed out after 1 s") and time.monotonic() - started < 8
    deadline = time.monotonic() + 5
    while processes_with(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(mark) == []
    out = Workspace(worktree, command_timeout_s=10).dispatch(
        "run_command", {"command": f"setsid sleep {mark} & (sleep {mark} &); echo left"}
    )
    assert out == "exit code: 0\nleft"
    assert processes_with(mark) == []


@pytest.mark.parametrize("kind", kinds())
def test_run_command_environment(
    kind: str, worktree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "available", lambda: kind)
    monkeypatch.setenv("HANDOFF_API_KEY", "sk-handoff-secret")
    monkeypatch.setenv("NPM_TOKEN", "npm-secret")
    monkeypatch.setenv("DB_PASSWORD", "db-secret")
    monkeypatch.setenv("GIT_DIR", "/elsewhere/.git")
    show = 'echo "[$HANDOFF_API_KEY][$NPM_TOKEN][$DB_PASSWORD][$GIT_DIR]"'
    assert (
        Workspace(worktree).dispatch("run_command", {"command": show}) == "exit code: 0\n[][][][]"
    )
    passed = Workspace(worktree, pass_env=["NPM_TOKEN"]).dispatch("run_command", {"command": show})
    assert passed == "exit code: 0\n[][npm-secret][][]"


# -- the environment of command agents --------------------------------------------------------


async def test_command_agent_environment_is_scrubbed(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "HANDOFF_API_KEY": "sk-handoff",
        "OPENAI_API_KEY": "sk-openai",
        "ANTHROPIC_API_KEY": "sk-ant",
        "GITHUB_TOKEN": "ghp-x",
        "AWS_SECRET_ACCESS_KEY": "aws-x",
        "SOME_CREDENTIALS": "c",
        "SSH_AUTH_SOCK": "/run/agent.sock",
        "GIT_DIR": str(repo / ".git"),
        "GIT_INDEX_FILE": str(repo / ".git" / "index"),
        "EDITOR": "vim",
    }.items():
        monkeypatch.setenv(name, value)
    seen = tmp_path / "env.json"
    argv = write_agent(
        tmp_path / "bin",
        "envdump",
        f"""
        pathlib.Path({str(seen)!r}).write_text(json.dumps(dict(os.environ)))
        print("dumped")
    """,
    )
    (repo / ".handoff.toml").write_text(
        toml_agents({"dump": argv}, "dump") + 'passEnv = ["ANTHROPIC_API_KEY"]\n'
    )
    trust_repo(repo)
    cfg, messages = config_mod.load(repo)
    assert messages == [] and cfg.agents["dump"].passEnv == ["ANTHROPIC_API_KEY"]
    mgr = SessionManager(repo, cfg)
    s = await mgr.wait(mgr.delegate(DelegateRequest("look")).id)
    assert s.state is State.READY, s.error
    env = json.loads(seen.read_text())
    for gone in (
        "HANDOFF_API_KEY",
        "OPENAI_API_KEY",
        "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "SOME_CREDENTIALS",
        "SSH_AUTH_SOCK",
        "GIT_DIR",
        "GIT_INDEX_FILE",
    ):
        assert gone not in env
    assert env["ANTHROPIC_API_KEY"] == "sk-ant"  # named in passEnv
    assert env["EDITOR"] == "vim" and env["HOME"] == os.environ["HOME"] and env["PATH"]
    assert env["HANDOFF_SESSION_ID"] == s.id
    mgr.discard(s.id)


# -- writes never go through a shared inode ---------------------------------------------------


def test_writes_replace_a_hard_link_instead_of_writing_through(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("outside\n")
    os.link(outside, repo / "linked.txt")  # e.g. left by an unconfined command (`allow`)
    ws = Workspace(repo, policy="deny")
    out = ws.dispatch("write_file", {"path": "linked.txt", "content": "new\n"})
    assert out.startswith("overwrote linked.txt (4 bytes)") and "hard link" in out
    assert outside.read_text() == "outside\n" and os.stat(outside).st_nlink == 1
    assert (repo / "linked.txt").read_text() == "new\n"
    os.link(outside, repo / "again.txt")
    out = ws.dispatch("edit_file", {"path": "again.txt", "oldText": "outside", "newText": "edited"})
    assert out.startswith("edited again.txt") and "hard link" in out
    assert outside.read_text() == "outside\n" and (repo / "again.txt").read_text() == "edited\n"


def test_writes_keep_the_file_mode(repo: Path) -> None:
    script = repo / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o750)
    out = Workspace(repo).dispatch(
        "edit_file", {"path": "run.sh", "oldText": "hi", "newText": "ho"}
    )
    assert out.startswith("edited run.sh") and "hard link" not in out
    assert stat.S_IMODE(script.stat().st_mode) == 0o750 and script.read_text().endswith("ho\n")
    assert sorted(p.name for p in repo.iterdir() if "handoff" in p.name) == []  # no temp left


# -- pieces -----------------------------------------------------------------------------------


def test_complement_covers_everything_but_the_hidden(tmp_path: Path) -> None:
    for rel in ("a/x", "a/secret/y", "b/z", "c"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "secret")
    (tmp_path / "ok-link").symlink_to(tmp_path / "b")
    got = sorted(
        os.path.relpath(p, tmp_path)
        for p in sandbox._complement(str(tmp_path), [str(tmp_path / "a" / "secret")])
    )
    assert got == ["a/x", "b", "c", "ok-link"]
    assert sandbox._complement(str(tmp_path), []) == [str(tmp_path)]


def test_secret_names() -> None:
    for name in (
        "HANDOFF_API_KEY",
        "OPENAI_API_KEY",
        "GH_TOKEN",
        "MY_SECRET",
        "DB_PASSWORD",
        "PGPASSWD",
        "AZURE_CREDENTIALS",
        "SSH_AUTH_SOCK",
        "api_key",
    ):
        assert is_secret_name(name), name
    for name in ("PATH", "HOME", "EDITOR", "LANG", "GIT_AUTHOR_NAME", "VIRTUAL_ENV"):
        assert not is_secret_name(name), name
