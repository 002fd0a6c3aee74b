"""The estimator ĝ = 1/(Nσ) Σ F_i s_i E_i: unbiased on linear fitness, O(1/r) to full rank."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eggroll as egg


def _cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("noise", ["keys", "table"])
@pytest.mark.parametrize("strategy", ["eggroll", "openes"])
def test_linear_fitness_estimate_points_along_c(strategy, noise):
    key_c = jax.random.key(42)
    c = {"w": jax.random.normal(key_c, (8, 6)), "b": jax.random.normal(jax.random.key(7), (6,))}
    params = {"w": jnp.zeros((8, 6)), "b": jnp.zeros(6)}

    def linear(view):
        dense = egg.materialize(view)
        return jnp.sum(dense["w"] * c["w"]) + jnp.sum(dense["b"] * c["b"])

    kwargs = {"shaping": egg.shaping.identity, "noise": noise}
    es = (
        egg.EGGROLL(8192, sigma=0.05, rank=1, **kwargs)
        if strategy == "eggroll"
        else egg.OpenES(8192, sigma=0.05, **kwargs)
    )
    state = es.init(jax.random.key(0), params)
    grad, _ = es.estimate(state, es.evaluate(state, linear))
    cos = _cosine(
        np.concatenate([np.ravel(grad["w"]), grad["b"]]), np.concatenate([np.ravel(c["w"]), c["b"]])
    )
    assert cos > 0.95, cos
    # Unbiased in scale too (raw fitness, antithetic pairs): |ĝ| ≈ |C| within noise.
    np.testing.assert_allclose(np.linalg.norm(grad["w"]), np.linalg.norm(c["w"]), rtol=0.15)


def test_lowrank_estimate_approaches_full_rank_as_rank_grows():
    """f(W) = Σ W⁴. The full-rank ES estimate has expectation 4W³ + 12σ²W; for the rank-r
    perturbation E = ABᵀ/√r it is 4W³ + 4σ²(3 + 6/r)W, so the gap shrinks like 1/r."""
    sigma = 0.5
    w = jax.random.normal(jax.random.key(3), (16, 16))
    full_rank_expectation = 4 * w**3 + 12 * sigma**2 * w

    def quartic(view):
        return jnp.sum(egg.materialize(view)["w"] ** 4)

    gaps = {}
    for rank in (1, 4, 16):
        estimates = []
        for seed in range(2):
            es = egg.EGGROLL(32768, sigma=sigma, rank=rank, shaping=egg.shaping.identity)
            state = es.init(jax.random.key(seed), {"w": w})
            grad, _ = es.estimate(state, es.evaluate(state, quartic))
            estimates.append(grad["w"])
        gaps[rank] = float(
            jnp.linalg.norm(jnp.mean(jnp.stack(estimates), 0) - full_rank_expectation)
        )
    assert gaps[1] > 2 * gaps[4] > 0, gaps
    assert gaps[4] > gaps[16], gaps


def test_estimate_is_independent_of_chunk_size():
    params = {"w": jax.random.normal(jax.random.key(0), (5, 7)), "b": jnp.ones(7)}
    fitness = jax.random.normal(jax.random.key(1), (32,))
    results = []
    for chunk in (1, 4, 16):
        es = egg.EGGROLL(32, sigma=0.1, rank=2, chunk_size=chunk)
        state = es.init(jax.random.key(2), params)
        results.append(es.estimate(state, fitness)[0])
    for other in results[1:]:
        for k in params:
            np.testing.assert_allclose(results[0][k], other[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("noise", ["keys", "table"])
def test_estimate_matches_explicit_sum_over_members(noise):
    """ĝ equals 1/(Nσ) Σ_i F_i (θ_i − θ)/σ computed from materialised members."""
    params = {"w": jax.random.normal(jax.random.key(0), (4, 3)), "b": jnp.zeros(3)}
    fitness = jax.random.normal(jax.random.key(1), (8,))
    kwargs = {"shaping": egg.shaping.identity, "noise": noise}
    for es in (
        egg.EGGROLL(8, sigma=0.2, rank=2, **kwargs),
        egg.OpenES(8, sigma=0.2, **kwargs),
    ):
        state = es.init(jax.random.key(5), params)
        grad, _ = es.estimate(state, fitness)
        members = es.ask(state).materialize()
        for k in params:
            eps = (members[k] - params[k][None]) / 0.2
            explicit = jnp.tensordot(fitness, eps, axes=1) / (8 * 0.2)
            np.testing.assert_allclose(grad[k], explicit, rtol=1e-4, atol=1e-5)
