"""Configuration: one tree of small typed classes, merged from every source.

Sources, later wins (docs/DESIGN.md): defaults < ``.handoff.toml`` / ``[tool.handoff]`` <
environment < LSP ``initializationOptions`` < ``workspace/configuration``. Keys are the
camelCase wire names in every source. Bad values fall back to the default and produce one
clear message each; loading never raises.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

ENV_KEYS = {
    "HANDOFF_MODEL": "model",
    "HANDOFF_API_BASE": "apiBase",
    "HANDOFF_API_KEY": "apiKey",
}


PERMISSIONS = ("worktree", "reject", "ask")
# scratch files agents leave that are never part of a result (aider's chat history and tags cache)
DEFAULT_EXCLUDE = (".aider*",)
EXECUTORS = ("local", "ray")
AGENT_KEYS = ("command", "acp", "env", "passEnv", "exclude", "permissions")


@dataclasses.dataclass
class AgentSpec:
    """A named external agent: ``{command = [...]}`` or ``{acp = [...]}`` (a preset or configured)."""

    name: str
    command: list[str] | None = None
    acp: list[str] | None = None
    # environment variables passed although they look like credentials (e.g. ANTHROPIC_API_KEY)
    passEnv: list[str] = dataclasses.field(default_factory=list)
    env: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)  # set for this agent
    exclude: list[str] = dataclasses.field(default_factory=list)  # globs kept out of its results
    permissions: str | None = None  # ACP permission requests; None: the top-level `permissions`
    # presets (agent/presets.py): where it comes from and what it needs
    preset: bool = False
    install: str = ""
    needs: list[str] = dataclasses.field(default_factory=list)  # variables it needs (one of them)
    docs: str = ""

    @property
    def kind(self) -> str:
        return "acp" if self.acp else "command"

    @property
    def argv(self) -> list[str]:
        return list(self.acp or self.command or [])


@dataclasses.dataclass
class TodoConfig:
    autoTrigger: bool = True


@dataclasses.dataclass
class DaemonConfig:
    idleMinutes: float = (
        30.0  # the session daemon exits this long after its last client and session
    )


@dataclasses.dataclass
class PoolConfig:
    size: int = 2  # idle worktrees kept ready per repository (agent/pool.py); 0 turns it off


@dataclasses.dataclass
class WorktreeConfig:
    # globs (gitignore-like) of ignored files copied into each session's worktree
    include: list[str] = dataclasses.field(default_factory=list)
    setup: str | None = None  # a command run in the worktree (sandboxed) before the agent


@dataclasses.dataclass
class RayConfig:
    """Where sessions run with ``executor = "ray"`` (agent/executors/): the cluster and what
    each session's actor asks of it."""

    address: str | None = None  # HOST:PORT of the cluster's head, or ray://HOST:PORT (Ray Client)
    numCpus: float = 1.0  # CPUs each session's actor holds
    memoryMb: int | None = None  # memory each session's actor asks for (None: Ray's default)
    runtimeEnv: dict[str, Any] = dataclasses.field(default_factory=dict)  # Ray's runtime_env


@dataclasses.dataclass
class Config:
    model: str | None = None
    apiBase: str | None = None
    apiKey: str | None = dataclasses.field(default=None, repr=False)  # never persisted
    agent: str = "builtin"
    agents: dict[str, AgentSpec] = dataclasses.field(default_factory=dict)
    maxParallel: int = 4
    maxSteps: int = 30
    maxCostUsd: float = 1.0
    timeoutS: float = 900.0
    testCommand: str | None = None
    autoApply: bool = False
    todo: TodoConfig = dataclasses.field(default_factory=TodoConfig)
    # how the built-in agent's run_command runs: "sandbox" | "allow" | "deny" (agent/sandbox.py)
    commandPolicy: str = "sandbox"
    # environment variables run_command gets although they look like credentials
    passEnv: list[str] = dataclasses.field(default_factory=list)
    # applied and discarded sessions are forgotten (record, brief, transcript) this many days
    # after they ended, when sessions are loaded; 0 keeps them for ever
    keepFinishedDays: float = 7.0
    # globs (gitignore-like) of files kept out of every result, on top of DEFAULT_EXCLUDE
    exclude: list[str] = dataclasses.field(default_factory=list)
    # how ACP agents' permission requests are answered: "worktree" | "reject" | "ask"
    permissions: str = "worktree"
    daemon: DaemonConfig = dataclasses.field(default_factory=DaemonConfig)
    notify: bool = False  # a desktop notification (notify-send) when a session finishes
    executor: str = "local"  # where agents run: "local" (this machine) or "ray" (a Ray cluster)
    ray: RayConfig = dataclasses.field(default_factory=RayConfig)
    pool: PoolConfig = dataclasses.field(default_factory=PoolConfig)
    worktree: WorktreeConfig = dataclasses.field(default_factory=WorktreeConfig)
    # set when an untrusted repository file chose the default agent (agent/trust.py): the message
    # a delegation to the default agent is refused with, until `handoff trust`
    untrusted: str | None = dataclasses.field(default=None, repr=False, metadata={"internal": True})
    # set when an untrusted repository file chose the built-in agent's model: the refusal when no
    # setting of the user's chose one
    untrusted_model: str | None = dataclasses.field(
        default=None, repr=False, metadata={"internal": True}
    )

    def agent_spec(self, name: str | None) -> AgentSpec | None:
        """The external agent called ``name`` (configured, else a preset); None for the
        built-in one and for a name that is neither."""
        name = name or self.agent
        if name == "builtin":
            return None
        spec = self.agents.get(name)
        if spec is None:
            from .presets import preset

            spec = preset(name)
        return spec

    def exclude_for(self, name: str | None) -> list[str]:
        """The globs kept out of the results of agent ``name``."""
        spec = self.agent_spec(name)
        return [*DEFAULT_EXCLUDE, *self.exclude, *(spec.exclude if spec else ())]


def _positive_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError("a whole number of at least 1")
    return v


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError("a whole number, 0 or more")
    return v


def _positive_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise ValueError("a positive number")
    return float(v)


def _days(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ValueError("a number of days, 0 or more")
    return float(v)


def _opt_str(v: Any) -> str | None:
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise ValueError("a string")
    return v


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return v.lower() in ("true", "1", "yes", "on")
    raise ValueError("true or false")


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("a non-empty string")
    return v


def _policy(v: Any) -> str:
    if v not in ("sandbox", "allow", "deny"):
        raise ValueError('one of "sandbox", "allow", "deny"')
    return str(v)


def _env_names(v: Any) -> list[str]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(
        isinstance(n, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in v
    ):
        raise ValueError("a list of environment variable names")
    return list(v)


def _permissions(v: Any) -> str:
    if v not in PERMISSIONS:
        raise ValueError('one of "worktree", "reject", "ask"')
    return str(v)


def _globs(v: Any) -> list[str]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(g, str) and g.strip() for g in v):
        raise ValueError("a list of globs")
    return [g.strip() for g in v]


def _env_table(v: Any) -> dict[str, str]:
    if not isinstance(v, Mapping) or not all(
        isinstance(k, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) and isinstance(x, str)
        for k, x in v.items()
    ):
        raise ValueError('a table of variables and string values, like {VAR = "value"}')
    return dict(v)


def _executor(v: Any) -> str:
    if v not in EXECUTORS:
        raise ValueError('one of "local", "ray"')
    return str(v)


def _runtime_env(v: Any) -> dict[str, Any]:
    """Ray's ``runtime_env`` (pip, env_vars, working_dir...): Ray keeps it where its dashboard
    shows it, so no secret-looking variable may be set there (``passEnv`` carries those)."""
    if not isinstance(v, Mapping):
        raise ValueError('a table, like {pip = ["pytest"], env_vars = {CI = "1"}}')
    env_vars = v.get("env_vars", {})
    if not isinstance(env_vars, Mapping) or not all(
        isinstance(k, str) and isinstance(x, str) for k, x in env_vars.items()
    ):
        raise ValueError("a table whose `env_vars` maps names to strings")
    from .secrets import is_secret_name

    secret = sorted(k for k in env_vars if is_secret_name(k))
    if secret:
        raise ValueError(
            f"a table without secrets: `env_vars.{secret[0]}` looks like one, and Ray shows "
            "its runtime env on its dashboard (name the variable in `passEnv` instead)"
        )
    return dict(v)


def _megabytes(v: Any) -> int | None:
    return None if v is None else _positive_int(v)


_SCALARS = {
    "model": _opt_str,
    "apiBase": _opt_str,
    "apiKey": _opt_str,
    "agent": _str,
    "maxParallel": _positive_int,
    "maxSteps": _positive_int,
    "maxCostUsd": _positive_float,
    "timeoutS": _positive_float,
    "testCommand": _opt_str,
    "autoApply": _bool,
    "commandPolicy": _policy,
    "passEnv": _env_names,
    "keepFinishedDays": _days,
    "exclude": _globs,
    "permissions": _permissions,
    "notify": _bool,
    "executor": _executor,
}

# Tables of one level: key -> (the Config attribute, its keys and their checks)
_TABLES: dict[str, tuple[str, dict[str, Callable[[Any], Any]]]] = {
    "todo": ("todo", {"autoTrigger": _bool}),
    "daemon": ("daemon", {"idleMinutes": _days}),
    "ray": (
        "ray",
        {
            "address": _opt_str,
            "numCpus": _positive_float,
            "memoryMb": _megabytes,
            "runtimeEnv": _runtime_env,
        },
    ),
    "pool": ("pool", {"size": _count}),
    "worktree": ("worktree", {"include": _globs, "setup": _opt_str}),
}


def _argv(v: Any) -> list[str]:
    if isinstance(v, str):
        import shlex

        v = shlex.split(v)
    if not isinstance(v, list) or not v or not all(isinstance(a, str) for a in v):
        raise ValueError("a non-empty list of strings")
    return list(v)


def _apply(cfg: Config, data: Mapping[str, Any], source: str, messages: list[str]) -> None:
    for key, value in data.items():
        where = f"{source}: `{key}`"
        try:
            if key in _SCALARS:
                setattr(cfg, key, _SCALARS[key](value))
            elif key in _TABLES:
                attr, checks = _TABLES[key]
                if not isinstance(value, Mapping):
                    example = ", ".join(f"{k} = ..." for k in checks)
                    raise ValueError(f"a table like {{{example}}}")
                for tkey, tval in value.items():
                    if tkey not in checks:
                        messages.append(f"{where}.{tkey} is not a known key; ignored")
                        continue
                    try:
                        setattr(getattr(cfg, attr), tkey, checks[tkey](tval))
                    except ValueError as exc:
                        messages.append(f"{where}.{tkey} must be {exc}; using the default")
            elif "." in key and key.split(".", 1)[0] in _TABLES:  # dotted, as some clients send it
                table, tkey = key.split(".", 1)
                attr, checks = _TABLES[table]
                if tkey not in checks:
                    messages.append(f"{where} is not a known key; ignored")
                    continue
                setattr(getattr(cfg, attr), tkey, checks[tkey](value))
            elif key == "agents":
                if not isinstance(value, Mapping):
                    raise ValueError("a table of named agents")
                for name, spec in value.items():
                    try:
                        cfg.agents[name] = _agent_spec(
                            name, spec, cfg.agent_spec(name), source, messages
                        )
                    except ValueError as exc:
                        messages.append(f"{source}: agent `{name}` {exc}; ignored")
            else:
                messages.append(f"{where} is not a known key; ignored")
        except ValueError as exc:
            messages.append(f"{where} must be {exc}; using the default")


_AGENT_FIELDS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "passEnv": (_env_names, "passing none"),
    "env": (_env_table, "setting none"),
    "exclude": (_globs, "excluding none"),
    "permissions": (_permissions, "using the default"),
}


def _agent_spec(
    name: str, spec: Any, base: AgentSpec | None, source: str, messages: list[str]
) -> AgentSpec:
    """``[agents.NAME]`` over ``base`` (the preset or an earlier source's entry of that name):
    `command` or `acp` replaces its argv, `env` adds to its variables, the other keys replace
    theirs."""
    if name == "builtin":
        raise ValueError("is the built-in agent's name")
    if not isinstance(spec, Mapping):
        raise ValueError("must be a table with `command` or `acp`")
    if "command" in spec and "acp" in spec:
        raise ValueError("must have exactly one of `command` or `acp`")
    out = dataclasses.replace(base, name=name) if base is not None else AgentSpec(name)
    if "command" in spec:
        out.command, out.acp = _argv(spec["command"]), None
    elif "acp" in spec:
        out.acp, out.command = _argv(spec["acp"]), None
    elif base is None:
        raise ValueError("must have `command` or `acp`")
    for key, v in spec.items():
        if key in ("command", "acp"):
            continue
        if key not in _AGENT_FIELDS:
            messages.append(
                f"{source}: `agents.{name}.{key}` is not a known key "
                f"(known: {', '.join(AGENT_KEYS)}); ignored"
            )
            continue
        check, fallback = _AGENT_FIELDS[key]
        try:
            value = check(v)
            if key == "env":  # adds to the preset's (or an earlier source's) variables
                value = {**out.env, **dict(value)}
            setattr(out, key, value)
        except ValueError as exc:
            messages.append(f"{source}: agent `{name}`: `{key}` must be {exc}; {fallback}")
    return out


FILES = (".handoff.toml", "pyproject.toml")  # the files of a root read_toml reads, in that order


def read_toml(repo_root: Path, messages: list[str]) -> tuple[dict[str, Any], str]:
    """``.handoff.toml`` at the repo root wins over ``[tool.handoff]`` in ``pyproject.toml``."""
    for name in FILES:
        path = repo_root / name
        if not path.is_file():
            continue
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            messages.append(f"{name}: cannot be read ({exc}); ignored")
            continue
        if name == "pyproject.toml":
            data = data.get("tool", {}).get("handoff")
            if data is None:
                continue
            if not isinstance(data, dict):
                messages.append("pyproject.toml: [tool.handoff] must be a table; ignored")
                continue
        return data, name
    return {}, ""


def _trusted_part(
    cfg: Config, repo_root: Path, name: str, data: Mapping[str, Any], messages: list[str]
) -> Mapping[str, Any]:
    """``data`` without what needs workspace trust (agent/trust.py) unless the file is trusted."""
    from . import trust

    guarded = trust.guarded_keys(data)
    if not guarded or trust.is_trusted(repo_root / name, data):
        return data
    message = trust.TrustState(repo_root / name, False, guarded).message()
    messages.append(message)
    later = (
        f"until you trust this repository's Handoff settings (run `handoff trust` in {repo_root})"
    )
    if "agent" in guarded:
        cfg.untrusted = f"{name} chooses the agent `{data['agent']}`, which is not run {later}"
    elif "model" in guarded:  # refused only if no setting of the user's chose a model (load)
        cfg.untrusted_model = (
            f"{name} chooses the model `{data['model']}` for the built-in agent, which is not "
            f"used {later} (or set HANDOFF_MODEL / `model` in your editor's settings)"
        )
    return trust.without_guarded(data)


def from_env(env: Mapping[str, str]) -> dict[str, Any]:
    return {key: env[var] for var, key in ENV_KEYS.items() if env.get(var)}


def load(
    repo_root: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: list[tuple[str, Mapping[str, Any] | None]] = (),  # type: ignore[assignment]
) -> tuple[Config, list[str]]:
    """Merge every source into a :class:`Config`; returns it with the messages to show."""
    cfg = Config()
    messages: list[str] = []
    if repo_root is not None:
        data, name = read_toml(repo_root, messages)
        if data:
            _apply(cfg, _trusted_part(cfg, Path(repo_root), name, data, messages), name, messages)
    _apply(cfg, from_env(os.environ if env is None else env), "environment", messages)
    for source, given in overrides:
        if given is None:
            continue
        if not isinstance(given, Mapping):
            messages.append(f"{source}: the configuration must be an object; ignored")
            continue
        _apply(cfg, given, source, messages)
        if "agent" in given:  # the user's own choice of agent: nothing left to refuse
            cfg.untrusted = None
    if cfg.untrusted_model and cfg.untrusted is None and cfg.agent == "builtin" and not cfg.model:
        cfg.untrusted = cfg.untrusted_model
    if cfg.agent != "builtin" and cfg.agent_spec(cfg.agent) is None:
        messages.append(
            f"`agent` names `{cfg.agent}`, which is neither in `agents` nor a preset; "
            "using the built-in agent"
        )
        cfg.agent = "builtin"
    return cfg, messages
