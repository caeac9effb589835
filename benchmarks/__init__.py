"""Benchmark scripts (run as files: python benchmarks/engine.py, or mmemu bench)."""
