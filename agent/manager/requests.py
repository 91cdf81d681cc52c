"""What a client asks of the session manager, and what an apply reports."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config import Config
from ..merge import FileMerge


@dataclasses.dataclass
class DelegateRequest:
    instruction: str
    file: str | None = None  # repository-relative posix path of the origin
    uri: str | None = None
    range: dict[str, Any] | None = None
    overlays: dict[str, bytes] = dataclasses.field(default_factory=dict)  # unsaved buffers
    agent: str | None = None
    diagnostics: list[str] = dataclasses.field(default_factory=list)
    title: str | None = None
    config: Config | None = None  # the effective configuration of the client that asked
    env: dict[str, str] | None = None  # that client's environment, for the agent's variables


@dataclasses.dataclass
class ApplyReport:
    written: list[str]
    conflicts: list[FileMerge]
