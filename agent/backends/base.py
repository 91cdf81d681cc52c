"""The seam between a session and whatever does the work in its worktree.

A backend gets an :class:`AgentContext` and either returns an :class:`Outcome` or raises
an :class:`AgentError` whose message is what the developer sees. Cancellation arrives as
the usual anyio/asyncio cancellation; a backend that starts processes must kill their whole
process group when cancelled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..config import Config

if TYPE_CHECKING:
    from ..secrets import Redactor


@dataclasses.dataclass
class AgentContext:
    session_id: str
    worktree: Path  # the only folder the agent may touch
    instruction: str  # what the developer asked, one line or a paragraph
    brief: str  # the whole Markdown task brief (task.md)
    brief_path: Path  # where task.md lives (outside the worktree)
    config: Config
    env: dict[str, str] | None = None  # the delegating client's environment (None: this process's)
    file: str | None = None  # origin file, repository-relative posix path
    range: dict[str, Any] | None = None  # LSP range of the origin
    history: list[dict[str, Any]] = dataclasses.field(
        default_factory=list
    )  # prior transcript messages (follow-up)
    transcript_path: Path | None = (
        None  # where record() appends (an agent in another process writes there itself)
    )
    redactor: Redactor | None = None  # what that other process hides in the transcript: the store's
    # record(event) appends one JSON-able dict to the session transcript
    record: Callable[[dict[str, Any]], None] = lambda event: None
    # progress(message, steps, cost_usd) reports live progress to whoever watches
    progress: Callable[[str, int, float], None] = lambda message, steps, cost: None
    # started(pid) is told the process group of an agent process, so a crash can be cleaned up
    started: Callable[[int], None] = lambda pid: None
    # ask(question) puts an agent's permission question to the developer (``permissions = "ask"``)
    # and returns the optionId they chose ("" for none); None when no one can be asked. question:
    # {toolCall: {title, kind, locations}, options: [{optionId, name, kind}]}
    ask: Callable[[dict[str, Any]], Awaitable[str]] | None = None


@dataclasses.dataclass
class Outcome:
    summary: str
    steps: int = 0
    cost_usd: float = 0.0
    messages: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # for follow-up


class AgentError(Exception):
    """The agent ended badly; ``str(exc)`` is the message for the developer."""

    def __init__(self, message: str, *, steps: int = 0, cost_usd: float = 0.0) -> None:
        super().__init__(message)
        self.steps = steps
        self.cost_usd = cost_usd


class LimitReached(AgentError):
    """maxSteps, maxCostUsd or timeoutS was reached."""


class Backend(Protocol):
    name: str

    async def run(self, ctx: AgentContext) -> Outcome: ...
