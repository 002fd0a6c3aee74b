"""Test-wide settings: CPU only, deterministic, small and fast compiles (tests/xla.py)."""

import os

from tests.xla import xla_flags

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = xla_flags()  # before any test initialises a JAX backend
