"""Tests of ``agent/`` (``handoff.agent``): sessions, git, agents, sandbox, trust, the daemon and the
``handoff`` CLI as typed. Real git in tmp folders, real agent processes, scripted models over
HTTP. Fixtures: the root plugins (``repo``, ``state_dir``; ``caps``, ``agent``, ``editor`` where a
test goes through the server too)."""
