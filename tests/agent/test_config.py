"""Configuration: every source, later wins; bad values mean defaults plus a clear message."""

from __future__ import annotations

from pathlib import Path

from handoff.agent.config import Config, load

from tests.support.agents import trust_repo
from tests.support.paths import ROOT


def test_defaults():
    cfg, messages = load(None, env={})
    assert messages == []
    assert cfg == Config()
    assert cfg.agent == "builtin" and cfg.todo.autoTrigger is True


def test_sources_in_order(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.handoff]\nmaxParallel = 2\nmodel = "from-pyproject"\n'
        '[tool.handoff.agents.aider]\ncommand = ["aider", "--message-file", "{task_file}"]\n'
    )
    trust_repo(tmp_path)
    cfg, messages = load(
        tmp_path,
        env={"HANDOFF_MODEL": "from-env", "HANDOFF_API_KEY": "sk-x"},
        overrides=[
            ("initializationOptions", {"maxSteps": 5, "agent": "aider"}),
            ("workspace/configuration", {"maxSteps": 7}),
        ],
    )
    assert messages == []
    assert cfg.maxParallel == 2
    assert cfg.model == "from-env"
    assert cfg.apiKey == "sk-x"
    assert cfg.maxSteps == 7
    assert cfg.agent == "aider"
    assert cfg.agent_spec("aider").command == ["aider", "--message-file", "{task_file}"]
    assert "sk-x" not in repr(cfg)


def test_handoff_toml_wins_over_pyproject(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text("[tool.handoff]\nmaxParallel = 2\n")
    (tmp_path / ".handoff.toml").write_text("maxParallel = 6\n[todo]\nautoTrigger = false\n")
    cfg, messages = load(tmp_path, env={})
    assert (cfg.maxParallel, cfg.todo.autoTrigger, messages) == (6, False, [])


def test_bad_values_fall_back_with_one_message_each(tmp_path: Path):
    (tmp_path / ".handoff.toml").write_text(
        'maxParallel = 0\nmaxCostUsd = "lots"\nautoApply = "maybe"\ncolour = "red"\nkeepFinishedDays = -1\n'
        'agent = "ghost"\n[agents.broken]\nacp = []\n'
    )
    trust_repo(tmp_path)
    cfg, messages = load(tmp_path, env={})
    assert cfg.maxParallel == 4 and cfg.maxCostUsd == 1.0 and cfg.autoApply is False
    assert cfg.agent == "builtin" and cfg.keepFinishedDays == 7.0
    assert len(messages) == 7, messages
    joined = "\n".join(messages)
    for needle in (
        "maxParallel",
        "maxCostUsd",
        "autoApply",
        "colour",
        "ghost",
        "broken",
        "keepFinishedDays",
    ):
        assert needle in joined


def test_unreadable_toml_is_a_message_not_a_crash(tmp_path: Path):
    (tmp_path / ".handoff.toml").write_text("maxParallel = [unclosed\n")
    cfg, messages = load(tmp_path, env={}, overrides=[("initializationOptions", "nonsense")])
    assert cfg == Config()
    assert any(".handoff.toml" in m for m in messages)
    assert any("must be an object" in m for m in messages)


def test_python_310_gets_tomli():
    """config.py reads TOML with tomllib, or tomli before Python 3.11: the package says so."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    tomli = [r for r in reqs if r.name == "tomli"]
    assert len(tomli) == 1 and tomli[0].marker is not None
    assert tomli[0].marker.evaluate({"python_version": "3.10"})
    assert not tomli[0].marker.evaluate({"python_version": "3.11"})
    assert project["requires-python"] == ">=3.10"
