"""Test-wide settings: CPU only, deterministic, small compiles."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
