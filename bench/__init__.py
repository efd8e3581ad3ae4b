"""Benchmarks; `make bench` runs them and appends the figures to BENCHMARKS.md."""
