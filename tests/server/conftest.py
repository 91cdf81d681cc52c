"""Tests of ``server/`` (``handoff.server``): the LSP front, pure functions (edits, hunks, TODOs)
and end to end over stdio through pytest-lsp, parametrised over both client capability sets
(``caps``). Fixtures: the root plugins (``repo``; ``caps``, ``agent``, ``editor``)."""
