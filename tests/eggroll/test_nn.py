"""Member views through eggroll.nn equal the same model on materialised parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import eggroll as egg
from tests.eggroll import models

IDS = jnp.array([0, 3, 7, 10, 2])


@pytest.fixture(scope="module")
def setup():
    params = models.make_params(jax.random.key(0))
    es = egg.EGGROLL(8, sigma=0.3, optimizer=optax.sgd(0.1), rank=2, leaf_rule=models.RULE)
    return es, es.init(jax.random.key(1), params)


def test_view_fitness_equals_materialised_fitness_for_every_member(setup):
    es, state = setup
    scores = es.evaluate(state, models.fitness, IDS)
    dense = es.ask(state).materialize()
    for i in range(es.population_size):
        member = jax.tree_util.tree_map(lambda x, i=i: x[i], dense)
        expected = models.fitness(member, IDS)
        np.testing.assert_allclose(scores[i], expected, rtol=1e-5)
        # The perturbation is real: every member differs from the unperturbed model.
        assert abs(float(scores[i]) - float(models.fitness(state.params, IDS))) > 1e-4


def test_plain_params_run_through_the_same_ops(setup):
    es, state = setup
    value = models.fitness(state.params, IDS)
    assert np.isfinite(float(value))


def test_view_structure(setup):
    es, state = setup
    view = es.ask(state)[3]
    assert isinstance(view["w_in"], egg.LowRank)
    assert isinstance(view["emb"], egg.LowRank)
    assert isinstance(view["layers"]["w"], egg.LowRank)
    assert view["layers"]["w"].a.shape == (3, 8, 2)
    assert view["layers"]["w"].b.shape == (3, 8, 2)
    assert view["layers"]["w"].scale.shape == (3,)
    # Vector leaves arrive already perturbed as plain arrays.
    assert isinstance(view["b_in"], jax.Array)
    assert not np.allclose(view["b_in"], state.params["b_in"])


def test_stacked_layers_get_distinct_noise(setup):
    es, state = setup
    w = es.ask(state)[0]["layers"]["w"]
    deltas = [np.asarray(w[l].materialize() - w.base[l]) for l in range(3)]
    assert not np.allclose(deltas[0], deltas[1])
    assert not np.allclose(deltas[1], deltas[2])
    dense = egg.materialize({"w": w})["w"]
    np.testing.assert_allclose(dense[1], w[1].materialize(), rtol=1e-6)


def test_lowrank_indexing_past_stacking_axes_is_rejected(setup):
    es, state = setup
    w = es.ask(state)[0]["w_in"]
    with pytest.raises(IndexError, match="stacking axes"):
        w[0]


@pytest.mark.parametrize("rows", [(), (3,), (70,)])
@pytest.mark.parametrize("rank", [1, 4])
def test_dense_on_a_view_equals_the_materialised_matrix_for_every_row_count(rows, rank):
    # Few rows at rank > 1 take the column-by-column path, many rows the single product:
    # both equal x @ materialize(), per member under vmap too.
    k = jax.random.split(jax.random.key(rank), 4)
    members, n_in, n_out = 3, 6, 5
    base = jax.random.normal(k[0], (n_in, n_out))
    a = jax.random.normal(k[1], (members, n_in, rank))
    b = jax.random.normal(k[2], (members, n_out, rank))
    scale = jnp.array([0.5, -0.5, 0.25])
    x = jax.random.normal(k[3], (members, *rows, n_in))
    views = egg.LowRank(jnp.broadcast_to(base, (members, n_in, n_out)), a, b, scale)
    got = jax.vmap(lambda xi, ai, bi, si: egg.nn.dense(xi, egg.LowRank(base, ai, bi, si)))(
        x, a, b, scale
    )
    for i in range(members):
        expected = x[i] @ views[i].materialize()
        np.testing.assert_allclose(got[i], expected, rtol=1e-5, atol=1e-5)
