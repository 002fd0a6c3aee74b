"""Integer EGGROLL: views, antithetic noise, the Z-test update, configuration errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eggroll import batching, integer
from eggroll.intmath import shift_round


def _params():
    k = jax.random.key(0)
    return {
        "w": jax.random.randint(k, (12, 10), -60, 60).astype(jnp.int8),
        "stack": jax.random.randint(jax.random.key(1), (3, 6, 6), -60, 60).astype(jnp.int8),
    }


@pytest.mark.parametrize("noise", ["keys", "table"])
def test_view_matmul_matches_numpy_reference_of_the_factored_formula(noise):
    es = integer.IntEGGROLL(8, rank=2, noise=noise, table_size=4096)
    state = es.init(jax.random.key(2), _params())
    x = jax.random.randint(jax.random.key(3), (5, 12), -127, 128).astype(jnp.int8)
    for member in range(8):
        w = es.ask(state)[member]["w"]
        got = np.asarray(jax.jit(integer.matmul)(x, w))
        xa = np.asarray(x, np.int64) @ np.asarray(w.a, np.int64)
        xa = (xa + 8) >> 4
        corr = xa @ np.asarray(w.b, np.int64).T
        expected = np.asarray(x, np.int64) @ np.asarray(w.base, np.int64)
        expected = expected + ((corr + 8) >> 4) * int(w.sign)
        np.testing.assert_array_equal(got, expected)
        # ... and it is the dense perturbed matmul up to the rounding of the factored shifts.
        dense = np.asarray(x, np.int64) @ (
            np.asarray(w.base, np.int64) + np.asarray(w.delta(), np.int64)
        )
        # Rounding: ≤ ½ per entry of the dense delta, plus the two factored shifts.
        x64 = np.abs(np.asarray(x, np.int64))
        bound = 0.5 * x64.sum(-1, keepdims=True) + 0.5 * 2 * np.abs(w.b).max() / 16 + 1
        assert np.all(np.abs(got - dense) <= bound)


def test_vmapped_projection_equals_per_member_projection():
    es = integer.IntEGGROLL(16, rank=1)
    state = es.init(jax.random.key(2), _params())
    x = jax.random.randint(jax.random.key(3), (16, 4, 12), -127, 128).astype(jnp.int8)
    batched = jax.jit(jax.vmap(lambda i, xi: integer.matmul(xi, es.member(state, i)["w"])))
    got = batched(jnp.arange(16), x)
    for i in range(16):
        np.testing.assert_array_equal(got[i], integer.matmul(x[i], es.ask(state)[i]["w"]))


@pytest.mark.parametrize("one_gemm", [16, 0])  # the Intel and the AMD forms, on any machine
@pytest.mark.parametrize("draws", [5, 16, 24])  # one 2-D GEMM up to 16 draws, blocks above
def test_member_projection_rules_are_exact_under_nested_vmaps(draws, one_gemm, monkeypatch):
    """``x @ A`` with the two signs of a draw as an inner vmap sharing the factor and the draws
    as an outer vmap (the layout of a sliced evaluation), and as one flat vmap."""
    monkeypatch.setattr(batching, "_ONE_GEMM", one_gemm)
    kx, ka = jax.random.split(jax.random.key(4))
    x = jax.random.randint(kx, (draws, 2, 7, 12), -127, 128).astype(jnp.int8)
    a = jax.random.randint(ka, (draws, 12, 2), -127, 128).astype(jnp.int8)
    want = np.einsum("dstn,dnr->dstr", np.asarray(x, np.int64), np.asarray(a, np.int64))
    per_sign = jax.vmap(batching.member_project, in_axes=(0, None))
    nested = jax.jit(jax.vmap(per_sign))(x, a)
    flat = jax.jit(jax.vmap(batching.member_project))(x[:, 0], a)
    assert nested.dtype == flat.dtype == jnp.int32
    np.testing.assert_array_equal(nested, want)
    np.testing.assert_array_equal(flat, want[:, 0])


@pytest.mark.parametrize("one_gemm", [16, 0])  # the Intel and the AMD forms, on any machine
@pytest.mark.parametrize("draws", [5, 16, 24])  # one augmented GEMM up to 16, split above
def test_layer_gemm_and_projection_together_are_exact_under_nested_vmaps(
    draws, one_gemm, monkeypatch
):
    """``(x @ W, x @ A)`` with W shared, A per draw, the signs as an inner vmap."""
    monkeypatch.setattr(batching, "_ONE_GEMM", one_gemm)
    kx, kw, ka = jax.random.split(jax.random.key(5), 3)
    x = jax.random.randint(kx, (draws, 2, 7, 12), -127, 128).astype(jnp.int8)
    w = jax.random.randint(kw, (12, 9), -127, 128).astype(jnp.int8)
    a = jax.random.randint(ka, (draws, 12, 2), -127, 128).astype(jnp.int8)
    x64, a64 = np.asarray(x, np.int64), np.asarray(a, np.int64)
    want_w = np.einsum("dstn,nm->dstm", x64, np.asarray(w, np.int64))
    want_a = np.einsum("dstn,dnr->dstr", x64, a64)
    per_sign = jax.vmap(batching.matmul_and_project, in_axes=(0, None, None))
    xw, xa = jax.jit(jax.vmap(per_sign, in_axes=(0, None, 0)))(x, w, a)
    assert xw.dtype == xa.dtype == jnp.int32
    np.testing.assert_array_equal(xw, want_w)
    np.testing.assert_array_equal(xa, want_a)
    flat_w, flat_a = jax.jit(jax.vmap(batching.matmul_and_project, (0, None, 0)))(x[:, 0], w, a)
    np.testing.assert_array_equal(flat_w, want_w[:, 0])
    np.testing.assert_array_equal(flat_a, want_a[:, 0])
    shared_w, one_a = batching.matmul_and_project(x[0, 0], w, a[0])  # no vmap at all
    np.testing.assert_array_equal(shared_w, want_w[0, 0])
    np.testing.assert_array_equal(one_a, want_a[0, 0])


def test_antithetic_members_share_factors_with_opposite_signs():
    es = integer.IntEGGROLL(4, rank=1)
    state = es.init(jax.random.key(0), _params())
    plus, minus = es.ask(state)[2], es.ask(state)[3]
    np.testing.assert_array_equal(plus["w"].a, minus["w"].a)
    np.testing.assert_array_equal(plus["w"].delta(), -minus["w"].delta())
    assert np.abs(np.asarray(plus["w"].delta())).max() > 0
    # Stacked leaves: distinct factors per layer.
    assert not np.array_equal(plus["stack"].a[0], plus["stack"].a[1])


def test_perturbation_scale_is_about_one_step_at_sigma_shift_4():
    es = integer.IntEGGROLL(2, rank=1, sigma_shift=4)
    state = es.init(jax.random.key(0), {"w": jnp.zeros((64, 64), jnp.int8)})
    delta = np.asarray(es.ask(state)[0]["w"].delta(), np.float64)
    assert 0.6 < delta.std() < 1.6


def test_update_follows_a_linear_integer_fitness():
    """fitness = <W_member, C>: weights must move towards sign(C)."""
    c = jnp.where(jax.random.bernoulli(jax.random.key(7), 0.5, (12, 10)), 1, -1).astype(jnp.int32)
    es = integer.IntEGGROLL(512, rank=1, alpha=0.3, alpha_decay=0.0)
    state = es.init(jax.random.key(1), {"w": jnp.zeros((12, 10), jnp.int8)})

    def fitness(view):
        return jnp.sum(view["w"].materialize().astype(jnp.int32) * c)

    for _ in range(12):
        scores = es.evaluate(state, fitness)
        assert scores.dtype == jnp.int32
        state, info = es.tell(state, scores)
    w = np.asarray(state.params["w"])
    agreement = np.mean(np.sign(w) == np.asarray(c))
    assert agreement > 0.9, agreement
    assert float(info["moved_fraction"]) > 0.1  # signal moves far more than α would by chance


def test_null_fitness_moves_about_alpha_of_the_weights():
    es = integer.IntEGGROLL(512, rank=1, alpha=0.2, alpha_decay=0.0)
    state = es.init(jax.random.key(1), {"w": jnp.zeros((32, 32), jnp.int8)})
    scores = jax.random.normal(jax.random.key(5), (512,))
    _, info = es.tell(state, scores)
    assert 0.14 < float(info["moved_fraction"]) < 0.26
    np.testing.assert_allclose(float(info["alpha"]), 0.2, rtol=1e-6)


def test_error_feedback_moves_about_alpha_under_the_null_and_keeps_the_rest():
    """Random scores: R is a random walk that crosses θ = std/√α about every 1/α steps."""
    es = integer.IntEGGROLL(256, alpha=0.1, alpha_decay=0.0, error_feedback=True)
    state = es.init(jax.random.key(1), {"w": jnp.zeros((32, 32), jnp.int8)})
    assert state.residual["w"].dtype == jnp.int32
    tell = jax.jit(es.tell)
    moved = []
    for g in range(40):
        before = state.params["w"]
        state, info = tell(state, jax.random.normal(jax.random.key(g), (256,)))
        moved.append(float(jnp.mean(state.params["w"] != before)))
        # What did not move the weight is kept, and stays bounded: |R| < θ + one step's score
        # (at most ~5 null standard deviations, std = θ·√α).
        bound = float(info["threshold"]) * (1 + 5 * np.sqrt(0.1))
        assert float(jnp.max(jnp.abs(state.residual["w"]))) <= bound
    assert 0.05 < np.mean(moved[10:]) < 0.15, np.mean(moved[10:])


def test_error_feedback_adds_up_signal_the_memoryless_test_drops():
    """A weak linear signal (few pairs, low α) that one step's Z-test rarely passes."""
    c = jnp.where(jax.random.bernoulli(jax.random.key(7), 0.5, (12, 10)), 1, -1).astype(jnp.int32)

    def fitness(view):
        return jnp.sum(view["w"].materialize().astype(jnp.int32) * c)

    agreement = {}
    for feedback in (False, True):
        es = integer.IntEGGROLL(16, rank=1, alpha=0.01, alpha_decay=0.0, error_feedback=feedback)
        state = es.init(jax.random.key(1), {"w": jnp.zeros((12, 10), jnp.int8)})
        step = jax.jit(lambda s, es=es: es.tell(s, es.evaluate(s, fitness))[0])
        for _ in range(150):
            state = step(state)
        agreement[feedback] = float(np.mean(np.sign(np.asarray(state.params["w"])) == c))
    assert agreement[True] > 0.95, agreement
    assert agreement[False] < 0.85, agreement


def test_alpha_schedule_and_nonfinite_pairs():
    es = integer.IntEGGROLL(8, alpha=1.0, alpha_decay=0.5)
    state = es.init(jax.random.key(1), {"w": jnp.zeros((4, 4), jnp.int8)})
    np.testing.assert_allclose(float(es.alpha_at(jnp.asarray(2))), 0.5)
    scores = jnp.array([1.0, jnp.nan, 2.0, 1.0, jnp.inf, 0.0, 3.0, 3.0])
    _, info = es.tell(state, scores)
    assert int(info["active_pairs"]) == 1  # pair 0 has NaN, pair 2 inf, pair 3 tie
    new, info = es.tell(state, jnp.full(8, jnp.nan))
    np.testing.assert_array_equal(new.params["w"], state.params["w"])
    assert int(info["active_pairs"]) == 0


def test_int8_saturation_of_updates():
    es = integer.IntEGGROLL(64, alpha=1.0, alpha_decay=0.0)
    state = es.init(jax.random.key(1), {"w": jnp.full((4, 4), 127, jnp.int8)})
    new, _ = es.tell(state, jax.random.normal(jax.random.key(0), (64,)))
    assert new.params["w"].dtype == jnp.int8
    assert int(jnp.max(new.params["w"].astype(jnp.int32))) <= 127


def test_table_noise_is_deterministic_from_the_seed():
    es = integer.IntEGGROLL(4, noise="table", table_size=2048)
    a = es.init(jax.random.key(3), _params())
    b = es.init(jax.random.key(3), _params())
    np.testing.assert_array_equal(a.noise_table, b.noise_table)
    np.testing.assert_array_equal(es.ask(a)[1]["w"].a, es.ask(b)[1]["w"].a)
    values = np.asarray(a.noise_table, np.float64)
    assert 14 < values.std() < 18 and abs(values.mean()) < 1.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"population_size": 7}, "odd but antithetic"),
        ({"population_size": 8, "alpha": 0.0}, "alpha must be in"),
        ({"population_size": 8, "alpha": 1.5}, "alpha must be in"),
        ({"population_size": 8, "alpha_decay": -1.0}, "alpha_decay"),
        ({"population_size": 8, "sigma_shift": 20}, "sigma_shift"),
        ({"population_size": 8, "noise": "magic"}, "noise must be"),
        (
            {"population_size": 8, "chunk_size": 3},
            r"does not divide the 4 noise draws per generation \(antithetic pairs",
        ),
        ({"population_size": 8, "rank": 0}, "rank must be"),
    ],
)
def test_invalid_integer_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        integer.IntEGGROLL(**kwargs)


def test_invalid_leaves():
    es = integer.IntEGGROLL(8)
    with pytest.raises(ValueError, match="trains int8 matrices only"):
        es.init(jax.random.key(0), {"w": jnp.zeros((3, 3))})
    with pytest.raises(ValueError, match="mark vector leaves 'frozen'"):
        es.init(jax.random.key(0), {"b": jnp.zeros(3, jnp.int8)})
    with pytest.raises(ValueError, match="raise table_size"):
        integer.IntEGGROLL(8, table_size=1024).init(
            jax.random.key(0), {"w": jnp.zeros((600, 600), jnp.int8)}
        )
    integer.IntEGGROLL(8, leaf_rule={"b": "frozen"}).init(
        jax.random.key(0), {"b": jnp.zeros(3, jnp.int8), "w": jnp.zeros((3, 3), jnp.int8)}
    )


def test_shift_round_matches_floor_division_rounding():
    x = jnp.arange(-100, 100, dtype=jnp.int32)
    np.testing.assert_array_equal(shift_round(x, 3), np.floor(np.arange(-100, 100) / 8 + 0.5))


def test_the_one_gemm_form_is_chosen_by_cpu_vendor():
    assert batching.default_one_gemm_draws("GenuineIntel") == 16
    assert batching.default_one_gemm_draws("AuthenticAMD") == 0
    assert batching.default_one_gemm_draws("") == 16  # unknown: the form tuned first
