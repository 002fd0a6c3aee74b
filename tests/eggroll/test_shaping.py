"""Fitness shaping functions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eggroll import shaping


def test_centered_rank_range_order_and_ties():
    out = shaping.centered_rank(jnp.array([3.0, -1.0, 10.0, 2.0, 2.0]))
    np.testing.assert_allclose(out, [0.25, -0.5, 0.5, -0.125, -0.125])
    np.testing.assert_array_equal(shaping.centered_rank(jnp.ones(6)), np.zeros(6))


def test_z_score():
    out = shaping.z_score(jnp.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_allclose(out.mean(), 0.0, atol=1e-7)
    np.testing.assert_allclose(out.std(), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(shaping.z_score(jnp.full(4, 7.0)), np.zeros(4))


def test_group_z_score_uses_group_means_and_global_std():
    f = jnp.array([1.0, 3.0, 10.0, 14.0])
    out = shaping.group_z_score(2)(f)
    centred = np.array([-1.0, 1.0, -2.0, 2.0])
    np.testing.assert_allclose(out, centred / np.sqrt(np.mean(centred**2)), rtol=1e-6)
    per_group = shaping.group_z_score(2, global_std=False)(f)
    np.testing.assert_allclose(per_group, [-1, 1, -1, 1], rtol=1e-6)


def test_antithetic_sign():
    out = shaping.antithetic_sign(jnp.array([2.0, 1.0, 0.0, 5.0, 3.0, 3.0]))
    np.testing.assert_array_equal(out, [1, -1, -1, 1, 0, 0])


def test_clean_nonfinite_scores_them_as_worst():
    cleaned, frac = shaping.clean_nonfinite(jnp.array([1.0, jnp.nan, 4.0, -jnp.inf]))
    np.testing.assert_array_equal(cleaned, [1.0, 1.0, 4.0, 1.0])
    assert float(frac) == 0.5


@pytest.mark.parametrize("n", [7, 1024, 1025, 3000])
def test_centered_rank_averages_ties_on_both_sides_of_the_pairwise_limit(n):
    # Small populations compare all pairs, large ones sort: both give the average rank of a
    # tie group, checked against a brute-force count.
    rng = np.random.default_rng(n)
    f = rng.integers(-5, 6, n).astype(np.float32)  # many ties
    f[: n // 3] = rng.normal(size=n // 3)  # and distinct values
    smaller = (f[None, :] < f[:, None]).sum(1)
    equal = (f[None, :] == f[:, None]).sum(1)
    expected = (smaller + (equal - 1) / 2) / (n - 1) - 0.5
    out = np.asarray(jax.jit(shaping.centered_rank)(jnp.asarray(f)))
    np.testing.assert_allclose(out, expected, atol=1e-6)
