"""Benchmarks: `python -m bench` prints the table (notebook loop as the baseline)."""
