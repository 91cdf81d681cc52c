"""Configuration is the same in every client: each server key is a VS Code setting, forwarded.

The VS Code extension declares its settings in package.json (``contributes.configuration``) and
forwards them in src/settings.ts; a key missing from either is a key VS Code users cannot set.
"""

from __future__ import annotations

import dataclasses
import json

from handoff.agent.config import Config, load

from tests.support.paths import ROOT

EXT = ROOT / "editors" / "vscode"
# what a repository's own settings (.vscode/settings.json) must not set: they run programs or
# widen an agent's reach, or they are secrets
USER_ONLY = {"apiKey", "commandPolicy", "passEnv", "executor", "ray.address", "ray.runtimeEnv"}


def server_keys() -> list[str]:
    """Every configuration key of the server, nested ones dotted (``todo.autoTrigger``): the
    fields of :class:`Config` that the configuration accepts from a client (not the ones the
    server only derives, such as ``untrusted``)."""
    keys = []
    for f in dataclasses.fields(Config):
        if f.metadata.get("internal"):
            continue  # what loading found out (e.g. `untrusted`), not a key anyone sets
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(default)]
        else:
            keys.append(f.name)
    return [k for k in keys if accepted(k)]


def accepted(key: str) -> bool:
    _, messages = load(None, env={}, overrides=[("client", {key: "probe"})])
    return not any("not a known key" in m for m in messages)


def settings() -> dict[str, dict]:
    package = json.loads((EXT / "package.json").read_text())
    return package["contributes"]["configuration"]["properties"]


def test_every_server_key_is_a_vscode_setting_and_forwarded():
    declared, forwarded = settings(), (EXT / "src" / "settings.ts").read_text()
    keys = server_keys()
    assert {
        "model",
        "agents",
        "commandPolicy",
        "passEnv",
        "keepFinishedDays",
        "todo.autoTrigger",
    } <= set(keys)
    assert "untrusted" not in keys
    for key in keys:
        assert f"handoff.{key}" in declared, f"no VS Code setting handoff.{key}"
        assert f"'{key}'" in forwarded, f"src/settings.ts does not forward {key}"
        # unset by default, so .handoff.toml and the environment keep their say
        assert declared[f"handoff.{key}"]["default"] is None, key


def test_what_widens_an_agent_is_set_by_the_user_only():
    declared = settings()
    for key in USER_ONLY:
        assert declared[f"handoff.{key}"].get("scope") == "machine", key  # not a workspace's
    assert declared["handoff.commandPolicy"]["enum"] == ["sandbox", "allow", "deny", None]
    assert "HANDOFF_API_KEY" in declared["handoff.apiKey"]["markdownDescription"]


def test_a_workspace_cannot_set_what_needs_handoff_trust():
    """`.vscode/settings.json` is a file of the repository: for every key that needs `handoff
    trust` in `.handoff.toml` (agent/trust.py), the extension reads the user's value only and
    says which workspace values it ignored."""
    import re

    from handoff.agent.trust import GUARDED

    source = (EXT / "src" / "settings.ts").read_text()
    listed = re.search(r"USER_ONLY_KEYS: readonly string\[\] = \[(.*?)\];", source, re.S)
    assert listed is not None
    user_only = set(re.findall(r"'([\w.]+)'", listed.group(1)))
    declared = {k.removeprefix("handoff.") for k in settings()}
    assert user_only == {k for k in GUARDED if k in declared}
    assert (
        "globalValue" in source
        and "ignoredWorkspaceKeys" in (EXT / "src" / "client.ts").read_text()
    )
    for key in user_only:
        assert "User or remote settings only" in str(settings()[f"handoff.{key}"]), key
