"""Benchmarks: one module per benchmark, and the report generator."""
