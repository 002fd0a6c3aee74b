"""Tests of eggroll.benchmarks (the modules behind scripts/bench.py)."""
