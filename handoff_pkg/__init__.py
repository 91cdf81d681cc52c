"""Handoff: delegate work from the editor to background coding agents."""

__version__ = "0.1.0"
