"""``python -m handoff.server``: the same as ``handoff-lsp``."""

from handoff.server.cli import main

raise SystemExit(main())
