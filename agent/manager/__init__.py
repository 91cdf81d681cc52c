"""Sessions of one repository: create, run (at most ``maxParallel`` at once), cancel,
follow up, apply, discard. The one owner of session state transitions at run time.

Everything slow (git, disk walks, the agent) runs in background tasks or worker threads:
``delegate`` returns at once with a queued session, so an editor never waits on it.

The manager is split along its jobs: ``base`` (its state, loading, listeners), ``running``
(delegate, the agent's pass, follow-ups, cancel), ``review`` (the plan against the developer's
files, rejected hunks, apply to disk) and ``ending`` (applied, discarded, gc); ``requests`` holds
what clients ask.
"""

from __future__ import annotations

from ..session import SessionError
from .base import make_backend, not_ready
from .requests import ApplyReport, DelegateRequest
from .review import Review
from .running import Running

__all__ = [
    "ApplyReport",
    "DelegateRequest",
    "SessionError",
    "SessionManager",
    "make_backend",
    "not_ready",
]


class SessionManager(Running, Review):
    """Sessions of one repository: the one owner of their state transitions at run time."""
