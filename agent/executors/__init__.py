"""Where a session's agent runs: on this machine (the manager's own backends) or elsewhere.

``executor = "ray"`` runs each session in an actor on a Ray cluster (:mod:`.cluster`, the
daemon's side; :mod:`.worker`, the cluster's side). Only the daemon imports Ray, lazily, in
worker threads, and only when a session asks for that executor.
"""

from __future__ import annotations

from ..backends.base import AgentError


class WorkerLost(AgentError):
    """The machine or process running the session went away mid-run: the session becomes
    ``interrupted`` (resumable), not ``failed``."""

    interrupted = True


class ClusterError(AgentError):
    """The cluster cannot be used (unreachable, refused, Ray missing): one line for the user."""
