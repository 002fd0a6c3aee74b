"""XLA settings of the test processes (and of the subprocesses the tests start).

Tests are dominated by compile time on 2 cores, not by run time, so they compile with
LLVM's optimisation off (``EGGROLL_TEST_XLA_OPT=1`` keeps the default optimisation, for
checking that nothing depends on it). Results differ from optimised code at round-off only;
the exactness checks compare programs compiled the same way."""

from __future__ import annotations

import os

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def xla_flags(devices: int | None = None, base: str | None = None) -> str:
    """``XLA_FLAGS`` for a test process: ``base`` (default: this process's) with the fast-compile
    flags unless ``EGGROLL_TEST_XLA_OPT`` is set, and ``devices`` simulated CPU devices."""
    flags = (os.environ.get("XLA_FLAGS", "") if base is None else base).split()
    flags = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
    if not os.environ.get("EGGROLL_TEST_XLA_OPT"):
        flags += [f for f in FAST_COMPILE.split() if f not in flags]
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    return " ".join(flags)
