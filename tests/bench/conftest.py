"""Smoke test of ``bench/``: a quick run of the benchmarks, its numbers present and sane."""
