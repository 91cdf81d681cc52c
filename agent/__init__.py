"""The agent side of Handoff: snapshots, worktrees, sessions, agent backends.

Nothing here imports pygls, lsprotocol or the ``server`` package: the same sessions are
driven from the language server, the ``handoff`` CLI and tests.
"""
