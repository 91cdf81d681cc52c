"""``handoff/sessions`` ``{sessions: [Session]}``: the whole list, and when it is sent.

Coalesced: at most one every :data:`MIN_INTERVAL_S` after any change of state; for a running
session's steps and cost at most once every :data:`STEPS_INTERVAL_S`; at once after a command
that changed something (:meth:`Publisher.flush_now`). The diagnostics of the documents that
changed go out with the same timer (``server/diagnostics.py`` says what they are). Runs on the
event loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from handoff.agent.protocol import Session
from lsprotocol import types

from .diagnostics import Diagnostics
from .protocol import session_list

if TYPE_CHECKING:
    from .server import HandoffServer

NOTIFICATION = "handoff/sessions"
MIN_INTERVAL_S = 0.1
STEPS_INTERVAL_S = 1.0  # the list for a running session's new step count or cost: once a second


class Publisher:
    def __init__(self, ls: HandoffServer, diagnostics: Diagnostics) -> None:
        self.ls = ls
        self.diagnostics = diagnostics
        self.list_dirty = False
        self._dirty_uris: set[str] = set()
        self._published: set[str] = set()
        self._flush: asyncio.Handle | None = None
        self._steps_timer: asyncio.Handle | None = None
        self._last_flush = 0.0

    def schedule(self, *uris: str | None) -> None:
        """The list changed, and the diagnostics of ``uris``: send them soon."""
        self._dirty_uris.update(u for u in uris if u)
        self.list_dirty = True
        if self._flush is not None or self.ls.loop is None:
            return
        wait = max(0.0, self._last_flush + MIN_INTERVAL_S - time.monotonic())
        self._flush = self.ls.loop.call_later(wait, self.flush)

    def steps_changed(self) -> None:
        """Steps and cost change on every tool call of every running agent: the list for them is
        sent at a slower pace than for a change of state (which sends it anyway)."""
        if self.list_dirty or self._steps_timer is not None or self.ls.loop is None:
            return
        wait = max(0.0, self._last_flush + STEPS_INTERVAL_S - time.monotonic())
        self._steps_timer = self.ls.loop.call_later(wait, self._steps_due)

    def _steps_due(self) -> None:
        self._steps_timer = None
        self.schedule()

    def flush_now(self) -> None:
        """Send the pending session list at once (a command's effects are visible when it
        returns); diagnostics stay with the coalescing timer, which is still pending."""
        if self._flush is not None and self.list_dirty:
            self._send_list(self.ls.repos.sessions())

    def flush(self) -> None:
        """Send the session list and the diagnostics of every document that changed."""
        self._flush = None
        self._last_flush = time.monotonic()
        sessions = self.ls.repos.sessions()
        if self.list_dirty:
            self._send_list(sessions)
        uris, self._dirty_uris = self._dirty_uris, set()
        for uri in uris:
            diags = self.diagnostics.diagnostics(uri, sessions)
            if diags or uri in self._published:
                self.ls.text_document_publish_diagnostics(
                    types.PublishDiagnosticsParams(uri=uri, diagnostics=diags)
                )
            if diags:
                self._published.add(uri)
            else:
                self._published.discard(uri)

    def _send_list(self, sessions: list[Session]) -> None:
        self.list_dirty = False
        self.ls.protocol.notify(NOTIFICATION, session_list(sessions))
