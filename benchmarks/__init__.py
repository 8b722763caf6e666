"""Benchmarks: run from the project root as `python -m benchmarks.NAME` (README lists them); each
prints ratios measured side by side in one run and writes its figures under results/."""
