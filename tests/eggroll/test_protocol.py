"""What every strategy shares: one member-view protocol (``materialize``), ``step`` with
``has_aux``, the ``noise_table`` convention and the info statistics."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import eggroll as egg
from eggroll import integer
from tests.eggroll import models

IDS = jnp.array([0, 3, 7, 10, 2])


@functools.cache
def _float_setup(kind):
    params = models.make_params(jax.random.key(0), vocab=11, width=4, depth=2, out=3)
    if kind == "eggroll":
        es = egg.EGGROLL(4, sigma=0.3, rank=2, leaf_rule=models.RULE)
    else:
        es = egg.OpenES(4, sigma=0.3)
    return es, es.init(jax.random.key(1), params)


@pytest.mark.parametrize("kind", ["eggroll", "openes"])
def test_float_fitness_on_materialised_members_equals_fitness_through_views(kind):
    es, state = _float_setup(kind)
    scores = es.evaluate(state, models.fitness, IDS)
    dense = es.ask(state).materialize()
    for leaf in jax.tree_util.tree_leaves(dense):
        assert isinstance(leaf, jax.Array) and leaf.shape[0] == 4
    for i in range(4):
        member = jax.tree_util.tree_map(lambda x, i=i: x[i], dense)
        np.testing.assert_allclose(models.fitness(member, IDS), scores[i], rtol=1e-5)
        # egg.materialize of one view is the same member.
        one = egg.materialize(es.member(state, i))
        leaves = zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(member), strict=True)
        for a, b in leaves:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _int_params():
    return {
        "emb": jax.random.randint(jax.random.key(0), (11, 6), -60, 60).astype(jnp.int8),
        "w": jax.random.randint(jax.random.key(1), (6, 5), -60, 60).astype(jnp.int8),
    }


@functools.cache
def _int_setup():
    es = integer.IntEGGROLL(4, rank=2, table_size=4096)
    return es, es.init(jax.random.key(2), _int_params())


def _int_fitness(params, ids):
    """Integer-only, through the weights themselves: an embedding gather and an elementwise
    read of the matrix (where views and their materialised weights agree exactly)."""
    rows = integer.embed(ids, params["emb"]).astype(jnp.int32)
    w = egg.nn.vector(params["w"]).astype(jnp.int32)
    return jnp.sum(rows * rows[::-1]) + jnp.sum(w * jnp.arange(5)) - jnp.sum(jnp.abs(w))


def test_integer_fitness_on_materialised_members_equals_fitness_through_views_exactly():
    es, state = _int_setup()
    scores = es.evaluate(state, _int_fitness, IDS)
    dense = es.ask(state).materialize()
    # Before the protocol, this returned the IntLowRank views unchanged.
    assert all(isinstance(x, jax.Array) for x in jax.tree_util.tree_leaves(dense))
    assert dense["w"].dtype == jnp.int8 and dense["w"].shape == (4, 6, 5)
    view = es.member(state, 1)
    assert isinstance(view["w"], egg.MemberView) and isinstance(view["w"], integer.IntLowRank)
    np.testing.assert_array_equal(egg.materialize(view)["w"], dense["w"][1])
    np.testing.assert_array_equal(integer.materialize(view)["w"], dense["w"][1])
    for i in range(4):
        member = jax.tree_util.tree_map(lambda x, i=i: x[i], dense)
        assert int(_int_fitness(member, IDS)) == int(scores[i])
    assert len(set(np.asarray(scores).tolist())) > 1  # the members really differ


def test_integer_matmul_on_a_view_is_the_materialised_matmul_up_to_the_documented_rounding():
    """``matmul`` adds the correction in the activation domain (see IntLowRank.materialize)."""
    es, state = _int_setup()
    x = jax.random.randint(jax.random.key(3), (7, 6), -127, 128).astype(jnp.int8)
    for i in range(4):
        view = es.member(state, i)["w"]
        got = np.asarray(integer.matmul(x, view), np.int64)
        dense = np.asarray(integer.matmul(x, view.materialize()), np.int64)
        bound = (
            np.abs(np.asarray(x, np.int64)).sum(-1, keepdims=True) / 2
            + np.abs(np.asarray(view.b, np.int64)).sum(-1) / 2 ** (view.sigma_shift + 1)
            + 0.5
        )
        assert np.all(np.abs(got - dense) <= bound)


def _scaled_norm(view, x):
    h = egg.nn.dense(x, view["w"])
    return -jnp.sum((h - 1.0) ** 2), jnp.sum(h, -1)


def test_float_step_with_aux_equals_evaluate_then_tell():
    es = egg.EGGROLL(4, sigma=0.1, optimizer=optax.sgd(0.1))
    state = es.init(jax.random.key(0), {"w": jnp.ones((3, 2))})
    x = jax.random.normal(jax.random.key(1), (4, 5, 3))
    new, info, aux = es.step(state, _scaled_norm, x, in_axes=0, has_aux=True)
    scores, want_aux = es.evaluate(state, _scaled_norm, x, in_axes=0, has_aux=True)
    want, want_info = es.tell(state, scores)
    np.testing.assert_array_equal(new.params["w"], want.params["w"])
    np.testing.assert_array_equal(aux, want_aux)
    assert aux.shape == (4, 5)
    assert float(info["fitness_mean"]) == float(want_info["fitness_mean"])


def _int_aux(view, x):
    y = integer.matmul(x, view["w"])
    return jnp.sum(y), y[0]


def test_integer_step_exists_and_returns_aux():
    es, state = _int_setup()
    x = jax.random.randint(jax.random.key(4), (2, 6), -60, 60).astype(jnp.int8)
    new, info, aux = es.step(state, _int_aux, x, has_aux=True)
    scores, want_aux = es.evaluate(state, _int_aux, x, has_aux=True)
    want, _ = es.tell(state, scores)
    np.testing.assert_array_equal(new.params["w"], want.params["w"])
    np.testing.assert_array_equal(aux, want_aux)
    assert int(new.generation) == 1 and "active_pairs" in info
    plain, _ = es.step(state, lambda v, x: _int_aux(v, x)[0], x)  # without aux: (state, info)
    np.testing.assert_array_equal(plain.params["w"], want.params["w"])


def test_keys_noise_means_no_table_in_every_state():
    float_state = egg.EGGROLL(4, sigma=0.1, noise="keys").init(0, {"w": jnp.ones((3, 2))})
    int_state = integer.IntEGGROLL(4, noise="keys").init(0, {"w": jnp.ones((3, 2), jnp.int8)})
    assert float_state.noise_table is None and int_state.noise_table is None
    table = integer.IntEGGROLL(4, noise="table", table_size=1024).init(
        0, {"w": int_state.params["w"]}
    )
    assert table.noise_table.shape == (1024,)


SCORES = jnp.array([1.0, jnp.nan, 2.0, jnp.inf, -jnp.inf, 0.5, 3.0, 1.0])
COMMON = (
    "fitness_mean",
    "fitness_std",
    "fitness_min",
    "fitness_max",
    "nonfinite_scores",
    "nonfinite_fraction",
    "step_skipped",
)


def test_both_engines_leave_nonfinite_scores_out_of_the_statistics_and_count_them():
    finite = np.array([1.0, 2.0, 0.5, 3.0, 1.0])
    float_es = egg.EGGROLL(8, sigma=0.1)
    int_es = integer.IntEGGROLL(8, table_size=1024)
    _, float_info = float_es.tell(float_es.init(0, {"w": jnp.ones((3, 2))}), SCORES)
    _, int_info = int_es.tell(int_es.init(0, {"w": jnp.ones((3, 2), jnp.int8)}), SCORES)
    for info in (float_info, int_info):
        assert set(COMMON) <= set(info)
        np.testing.assert_allclose(info["fitness_mean"], finite.mean(), rtol=1e-6)
        np.testing.assert_allclose(info["fitness_std"], finite.std(), rtol=1e-6)
        assert float(info["fitness_min"]) == 0.5 and float(info["fitness_max"]) == 3.0
        assert int(info["nonfinite_scores"]) == 3
        np.testing.assert_allclose(info["nonfinite_fraction"], 3 / 8)
        assert float(info["step_skipped"]) == 0.0
    _, none_finite = int_es.tell(
        int_es.init(0, {"w": jnp.ones((3, 2), jnp.int8)}), jnp.full(8, jnp.nan)
    )
    assert int(none_finite["nonfinite_scores"]) == 8 and np.isnan(
        float(none_finite["fitness_mean"])
    )


def test_eggroll_defaults_to_the_noise_table_and_openes_to_keys():
    """The fast path without flags: EGGROLL's small low-rank draws come from the table."""
    assert egg.EGGROLL(4, sigma=0.1).noise == "table"
    assert egg.OpenES(4, sigma=0.1).noise == "keys"  # whole-matrix draws would not fit
