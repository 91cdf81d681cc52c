"""``$/progress``: one cancellable work-done progress per running session.

A fresh token per run, created with ``window/workDoneProgress/create`` when the client supports
``window.workDoneProgress`` (a refusal means the session runs without a progress bar); reports at
most every :data:`PROGRESS_INTERVAL_S` (the latest message wins); ``window/workDoneProgress/
cancel`` of a token cancels its session (:meth:`Progress.session_of_token`). Runs on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from typing import TYPE_CHECKING

from handoff.agent.protocol import Session
from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.exceptions import JsonRpcException

if TYPE_CHECKING:
    from .server import HandoffServer

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.25  # a session's $/progress reports: at most four a second


@dataclasses.dataclass
class _Bar:
    token: str
    begun: bool = False
    done: bool = False
    last: float = 0.0  # when a report was last sent
    pending: str | None = None  # the latest message not sent yet
    timer: asyncio.TimerHandle | None = None


class Progress:
    def __init__(self, ls: HandoffServer) -> None:
        self.ls = ls
        self._bars: dict[str, _Bar] = {}
        self._token_session: dict[str, str] = {}

    @property
    def supported(self) -> bool:
        return bool(get_capability(self.ls.client_capabilities, "window.work_done_progress", False))

    def running(self, session_id: str) -> bool:
        """A progress of the session is shown (or being created)."""
        return session_id in self._bars

    def start(self, s: Session) -> None:
        """Show the running session ``s`` (when the client supports progress)."""
        if s.id in self._bars or not self.supported:
            return
        bar = self._bars[s.id] = _Bar(f"handoff/{s.id}/{s.runs}/{uuid.uuid4().hex[:8]}")
        self._token_session[bar.token] = s.id
        self.ls.spawn(self._begin(s, bar), f"progress {s.id}")

    async def _begin(self, s: Session, bar: _Bar) -> None:
        try:
            await self.ls.work_done_progress.create_async(bar.token)
        except JsonRpcException as exc:  # refused: the session runs without a progress bar
            log.info("progress not created for %s: %s", s.id, exc)
            self._forget(s.id, bar)
            return
        if bar.done:
            self._forget(s.id, bar)
            return
        self.ls.work_done_progress.begin(
            bar.token,
            types.WorkDoneProgressBegin(
                title=f"Handoff: {s.title}", cancellable=True, message=f"{s.agent} agent working"
            ),
        )
        bar.begun = True

    def report(self, s: Session, message: str) -> None:
        """A session's progress, at most every PROGRESS_INTERVAL_S (the latest message wins):
        an agent may report many times a second, more than anyone reads."""
        bar = self._bars.get(s.id)
        if bar is None or not bar.begun or bar.done or self.ls.loop is None:
            return
        bar.pending = f"{message} (step {s.steps})" if s.steps else message
        if bar.timer is None:
            wait = bar.last + PROGRESS_INTERVAL_S - time.monotonic()
            if wait <= 0:
                self._send(bar)
            else:
                bar.timer = self.ls.loop.call_later(wait, self._send, bar)

    def _send(self, bar: _Bar) -> None:
        bar.timer = None
        if bar.done or bar.pending is None:
            return
        text, bar.pending, bar.last = bar.pending, None, time.monotonic()
        self.ls.work_done_progress.report(bar.token, types.WorkDoneProgressReport(message=text))

    def end(self, session_id: str, message: str) -> None:
        bar = self._bars.get(session_id)
        if bar is None:
            return
        bar.done = True
        if bar.timer is not None:
            bar.timer.cancel()
        if bar.begun:
            self.ls.work_done_progress.end(bar.token, types.WorkDoneProgressEnd(message=message))
            self._forget(session_id, bar)

    def _forget(self, session_id: str, bar: _Bar) -> None:
        if self._bars.get(session_id) is bar:
            del self._bars[session_id]
        self._token_session.pop(bar.token, None)
        self.ls.work_done_progress.tokens.pop(bar.token, None)

    def session_of_token(self, token: str | int) -> str | None:
        return self._token_session.get(str(token))
