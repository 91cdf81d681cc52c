"""Which environment variables are secrets, and how their values are kept out of records.

One rule, used everywhere (agents' environments, ``run_command``, the redactor): a name is a
secret when one of its *whole parts* is a secret word. Parts are split at ``_``, ``-``, ``.``
and camelCase humps, so ``OPENAI_API_KEY``, ``GH_TOKEN``, ``npm_config__authToken`` and
``AWS_SECRET_ACCESS_KEY`` are secrets while ``CLAUDE_CODE_MAX_OUTPUT_TOKENS``,
``MAX_THINKING_TOKENS`` and ``MONKEY_BUSINESS`` are not. A few words are secrets as the end of a
part too (``PGPASSWORD``, ``CLIENTSECRET``, ``GHTOKEN``), never ``KEY`` (``MONKEY``, ``HOTKEY``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

# a part equal to one of these makes the name a secret
SECRET_PARTS = frozenset(
    {
        "KEY",
        "APIKEY",
        "TOKEN",
        "SECRET",
        "SECRETS",
        "PASSWORD",
        "PASSWD",
        "PASSPHRASE",
        "CREDENTIAL",
        "CREDENTIALS",
    }
)
# a part ending with one of these does too (glued names such as PGPASSWORD)
SECRET_ENDINGS = (
    "APIKEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "CREDENTIALS",
    "CREDENTIAL",
)
# secrets whatever their names say
CREDENTIAL_VARS = frozenset({"SSH_AUTH_SOCK", "GPG_AGENT_INFO", "HANDOFF_API_KEY"})

_CHUNK = re.compile(r"[^A-Za-z0-9]+")
_HUMP = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def name_parts(name: str) -> list[str]:
    """``"npm_config__authToken"`` -> ``["NPM", "CONFIG", "AUTH", "TOKEN"]``."""
    parts: list[str] = []
    for chunk in _CHUNK.split(name):
        if not chunk:
            continue
        if chunk.isupper() or chunk.islower() or chunk.isdigit():
            parts.append(chunk.upper())
        else:
            parts.extend(h.upper() for h in _HUMP.findall(chunk))
    return parts


def is_secret_name(name: str) -> bool:
    if name in CREDENTIAL_VARS:
        return True
    return any(p in SECRET_PARTS or p.endswith(SECRET_ENDINGS) for p in name_parts(name))


def scrub(
    base: Mapping[str, str], keep: Iterable[str] = (), also: Iterable[str] = ()
) -> tuple[dict[str, str], list[str]]:
    """``base`` without its secrets (unless named in ``keep``) and without the names in
    ``also``; returns the environment and the sorted names dropped as secrets."""
    keep_s, also_s = set(keep), set(also)
    env: dict[str, str] = {}
    dropped: list[str] = []
    for k, v in base.items():
        if k in keep_s:
            env[k] = v
        elif is_secret_name(k):
            dropped.append(k)
        elif k not in also_s:
            env[k] = v
    return env, sorted(dropped)


class Redactor:
    """Replaces known secret values (API keys, tokens from the environment) with ``***``."""

    def __init__(self, extra: Iterable[str | None] = ()) -> None:
        values = {v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= 6}
        values.update(v for v in extra if v and len(v) >= 4)
        self._values = sorted(values, key=len, reverse=True)

    def add_env(self, env: Mapping[str, str]) -> None:
        """Hide the secret-looking values of another environment too (a client's)."""
        self.add(v for k, v in env.items() if is_secret_name(k) and len(v) >= 6)

    def add(self, values: Iterable[str | None]) -> None:
        """Hide these values too (e.g. an agent's ``env`` entries that look like secrets)."""
        new = {v for v in values if v and len(v) >= 4} - set(self._values)
        if new:
            self._values = sorted({*self._values, *new}, key=len, reverse=True)

    def text(self, s: str) -> str:
        for v in self._values:
            if v in s:
                s = s.replace(v, "***")
        return s

    def obj(self, o: Any) -> Any:
        if isinstance(o, str):
            return self.text(o)
        if isinstance(o, dict):
            return {k: self.obj(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [self.obj(v) for v in o]
        return o
