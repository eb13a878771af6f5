"""Benchmarks of coool (`make bench`): see bench/__main__.py and docs/BENCH.md."""
