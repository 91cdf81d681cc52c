"""VS Code: the extension type-checked, bundled and packaged, driven end to end through
code-server; its settings checked against the server's configuration keys."""
