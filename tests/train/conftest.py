"""Settings of the application tests: a persistent XLA compilation cache for the session.

Every run builds its jitted functions afresh (``make_step`` closes over its strategy), so two
runs of the same tiny shapes would compile the same programs twice; with the cache the second
compile is a file read. Set ``EGGROLL_TEST_XLA_CACHE`` to keep the cache between sessions."""

from __future__ import annotations

import os

import jax
import pytest


def _reset_cache() -> None:
    try:  # the cache is set up once per process, at the first compile: start it again
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):  # another jax: the cache is only an optimisation
        pass


@pytest.fixture(scope="session", autouse=True)
def xla_cache(tmp_path_factory):
    if jax.config.jax_compilation_cache_dir:  # the user's own cache is left alone
        yield jax.config.jax_compilation_cache_dir
        return
    path = os.environ.get("EGGROLL_TEST_XLA_CACHE") or str(tmp_path_factory.mktemp("xla-cache"))
    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    old = {name: getattr(jax.config, name) for name in names}
    for name, value in zip(names, (path, 0.0, -1), strict=True):
        jax.config.update(name, value)
    _reset_cache()
    yield path
    for name, value in old.items():
        jax.config.update(name, value)
    _reset_cache()


@pytest.fixture(scope="session", autouse=True)
def eggroll_cache(tmp_path_factory):
    """Corpora and base models go to one private cache for the session (set before any
    module-scoped fixture makes a run)."""
    path = tmp_path_factory.mktemp("eggroll-cache")
    old = os.environ.get("EGGROLL_CACHE")
    os.environ["EGGROLL_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("EGGROLL_CACHE", None)
    else:
        os.environ["EGGROLL_CACHE"] = old
