"""Tests of ``handoff_pkg/`` (import name ``handoff``): what both sides share (text, uris, files)."""
