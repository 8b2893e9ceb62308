"""Benchmarks that print tables (never timed tests)."""
