"""Tests of ``scripts/``: ``make demo`` as a user runs it."""
