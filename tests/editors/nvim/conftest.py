"""Neovim end to end: real Neovim 0.11, the plugin from editors/nvim, the real server. Fixtures
``nvim`` and ``sample`` come from tests/editors/conftest.py."""
