"""Benchmarks: gymnasiarch side by side with its baselines (``python -m benchmarks``).

Kept empty on purpose: spawned baseline children import this package, and a
baseline must not pay for imports that only the benchmarks need.
"""
