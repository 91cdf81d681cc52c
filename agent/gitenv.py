"""The environment variables that point git somewhere else: one list, for every git we start.

``REPOSITORY_VARS`` make git work on another repository, index or set of paths than the folder
it runs in (and change how pathspecs are read): ``agent/gitops.py`` strips them from every git
it runs for the developer's repository. ``AGENT_VARS`` adds what would change an agent's git
beyond that (configuration, programs git runs, ssh): agents and their commands never get any
of them (``agent/sandbox.py``, ``agent/backends/command.py``).
"""

from __future__ import annotations

REPOSITORY_VARS = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_PREFIX",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_LITERAL_PATHSPECS",
        "GIT_GLOB_PATHSPECS",
        "GIT_NOGLOB_PATHSPECS",
        "GIT_ICASE_PATHSPECS",
    }
)
AGENT_VARS = REPOSITORY_VARS | {
    "GIT_CEILING_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_EXEC_PATH",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
}
