"""handoff-lsp: the language server front of Handoff (pygls + lsprotocol)."""
