"""The root of the tests, which mirror the source tree: ``tests/agent/`` (``agent/``),
``tests/server/`` (``server/``), ``tests/handoff/`` (``handoff_pkg/``), ``tests/editors/`` (the
editor clients end to end), ``tests/bench/`` and ``tests/scripts/`` (their smoke tests); tools in
``tests/support/``. Shared fixtures are plugins, registered here (never imported by name)."""

pytest_plugins = ["tests.support.repo_fixtures", "tests.support.lsp_fixtures"]
