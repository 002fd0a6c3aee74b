"""Antithetic pairs, noise reuse, and stability of noise ids."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import eggroll as egg


def _params():
    return {"w": jnp.zeros((6, 5)), "b": jnp.zeros(5)}


def _deltas(es, state, member):
    view = egg.materialize(es.ask(state)[member])
    return {k: np.asarray(view[k] - state.params[k]) for k in view}


def test_antithetic_members_are_exact_opposites():
    es = egg.EGGROLL(6, sigma=0.1, rank=2)
    state = es.init(jax.random.key(0), _params())
    for p in range(3):
        plus, minus = _deltas(es, state, 2 * p), _deltas(es, state, 2 * p + 1)
        for k in plus:
            np.testing.assert_array_equal(plus[k], -minus[k])
            assert np.abs(plus[k]).max() > 0
    # Different pairs differ.
    assert not np.allclose(_deltas(es, state, 0)["w"], _deltas(es, state, 2)["w"])


def test_without_antithetic_every_member_has_its_own_noise():
    es = egg.EGGROLL(4, sigma=0.1, antithetic=False)
    state = es.init(jax.random.key(0), _params())
    d0, d1 = _deltas(es, state, 0), _deltas(es, state, 1)
    assert not np.allclose(d0["w"], -d1["w"])


def test_noise_reuse_repeats_for_k_generations_then_changes():
    es = egg.EGGROLL(4, sigma=0.1, noise_reuse=3, optimizer=optax.sgd(0.0))
    state = es.init(jax.random.key(0), _params())
    seen = []
    for _ in range(4):
        seen.append(_deltas(es, state, 0)["w"])
        state, _ = es.tell(state, jnp.arange(4.0))
    np.testing.assert_array_equal(seen[0], seen[1])
    np.testing.assert_array_equal(seen[0], seen[2])
    assert not np.allclose(seen[0], seen[3])


def test_fresh_noise_each_generation_by_default():
    es = egg.EGGROLL(4, sigma=0.1, optimizer=optax.sgd(0.0))
    state = es.init(jax.random.key(0), _params())
    first = _deltas(es, state, 0)["w"]
    state, _ = es.tell(state, jnp.arange(4.0))
    assert not np.allclose(first, _deltas(es, state, 0)["w"])


def test_noise_of_a_leaf_does_not_change_when_another_leaf_is_added():
    es = egg.EGGROLL(4, sigma=0.1)
    small = es.init(jax.random.key(0), _params())
    big = es.init(jax.random.key(0), {**_params(), "extra": jnp.zeros((3, 3))})
    np.testing.assert_array_equal(_deltas(es, small, 1)["w"], _deltas(es, big, 1)["w"])


def test_table_noise_is_unit_variance_deterministic_and_shared_by_pairs():
    es = egg.EGGROLL(64, sigma=1.0, rank=1, noise="table", table_size=4096)
    params = {"w": jnp.zeros((40, 30)), "b": jnp.zeros(30)}
    state = es.init(jax.random.key(3), params)
    again = es.init(jax.random.key(3), params)
    np.testing.assert_array_equal(state.noise_table, again.noise_table)
    assert state.noise_table.dtype == jnp.int8 and state.noise_table.shape == (4096,)
    view = es.ask(state)[6]
    # Factors are slices of the table scaled to unit variance.
    a = np.asarray(view["w"].a[:, 0]) / egg.noise.TABLE_UNIT
    np.testing.assert_allclose(a, np.round(a), atol=1e-3)
    table = np.asarray(state.noise_table, np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(table, a.size)
    assert np.any(np.all(windows == np.round(a).astype(np.int64), axis=1))
    # Antithetic partners are exact opposites; unit variance over the population.
    np.testing.assert_array_equal(_deltas(es, state, 6)["b"], -_deltas(es, state, 7)["b"])
    members = es.ask(state).materialize()
    assert 0.9 < float(jnp.std(members["b"])) < 1.1
    assert 0.9 < float(jnp.std(members["w"])) < 1.1  # one rank-1 term: A Bᵀ has unit variance


def test_table_noise_rejects_draws_larger_than_the_table():
    es = egg.EGGROLL(4, sigma=0.1, noise="table", table_size=1024)
    with pytest.raises(ValueError, match="raise table_size"):
        es.init(jax.random.key(0), {"b": jnp.zeros(2000)})


def test_all_leaves_at_once_are_the_same_numbers_as_leaf_by_leaf():
    """``draw_keys``/``normals`` (one hash for every leaf) reproduce ``draw_key``/``normal`` per
    leaf bit for bit, under vmap too, from keys and from a table."""
    seed = jax.random.key(3)
    ids = [egg.noise.leaf_id(p) for p in ("w0", "b0", "stack", "b1")]
    shapes = [(33, 1), (128,), (2, 138, 4), (1,)]
    table = egg.noise.make_table(seed, 4096)

    def leaf_by_leaf(i, tab):
        keys = [egg.noise.draw_key(seed, leaf, 5, i) for leaf in ids]
        out = [egg.noise.normal(k, s, tab) for k, s in zip(keys, shapes, strict=True)]
        return [jax.random.key_data(jnp.stack(keys)), *out]

    def at_once(i, tab):
        keys = egg.noise.draw_keys(seed, ids, 5, i)
        return [jax.random.key_data(keys), *egg.noise.normals(keys, shapes, tab)]

    draws = jnp.arange(16)
    for tab in (None, table):
        want = jax.jit(jax.vmap(lambda i, t=tab: leaf_by_leaf(i, t)))(draws)
        got = jax.jit(jax.vmap(lambda i, t=tab: at_once(i, t)))(draws)
        for w, g in zip(want, got, strict=True):
            np.testing.assert_array_equal(np.asarray(w), np.asarray(g))
        for w, g in zip(leaf_by_leaf(7, tab), at_once(7, tab), strict=True):
            np.testing.assert_array_equal(np.asarray(w), np.asarray(g))


def test_table_offsets_are_the_ones_member_views_use_and_cover_the_table():
    es = egg.EGGROLL(64, sigma=1.0, rank=2, table_size=4096)  # the default noise: the table
    params = {"w": jnp.zeros((40, 30)), "b": jnp.zeros(30)}
    state = es.init(jax.random.key(3), params)
    specs = {s.path: s for s in es.leaf_specs(params)}
    table = np.asarray(state.noise_table, np.float32) * egg.noise.TABLE_UNIT
    view = es.ask(state)[10]  # draw 5
    sizes = [70 * 2, 30]
    offsets = egg.noise.table_offsets(state.key, [specs["w"].id, specs["b"].id], 0, 5, sizes, 4096)
    w_draw = np.concatenate([np.asarray(view["w"].a), np.asarray(view["w"].b)]).reshape(-1)
    np.testing.assert_allclose(w_draw, table[int(offsets[0]) : int(offsets[0]) + 140], rtol=1e-6)
    b_noise = np.asarray(view["b"]) - 0.0  # σ = 1, sign +1, zero base
    np.testing.assert_allclose(b_noise, table[int(offsets[1]) : int(offsets[1]) + 30], rtol=1e-6)
    # Over many draws the offsets stay in range and spread over every valid position.
    many = jax.vmap(lambda i: egg.noise.table_offsets(state.key, [7, 8], 3, i, [4000, 1], 4096))(
        jnp.arange(20000)
    )
    many = np.asarray(many)
    assert many[:, 0].min() == 0 and many[:, 0].max() == 96  # 97 valid offsets, all hit
    assert many[:, 1].min() >= 0 and many[:, 1].max() <= 4095
    counts = np.bincount(many[:, 0], minlength=97)
    assert counts.min() > 0.6 * counts.mean()  # roughly uniform (expected 206 each)
    same_size = jax.vmap(lambda i: egg.noise.table_offsets(state.key, [7, 8], 3, i, [1, 1], 4096))(
        jnp.arange(100)
    )
    assert np.mean(np.asarray(same_size[:, 0] == same_size[:, 1])) < 0.05  # leaves differ
    with pytest.raises(ValueError, match="does not fit"):
        egg.noise.table_offsets(state.key, [7], 0, 0, [5000], 4096)


def test_table_offsets_from_a_key_of_another_implementation_fall_back_to_randint():
    seed = jax.random.key(0, impl="rbg")
    offsets = jax.vmap(lambda i: egg.noise.table_offsets(seed, [1, 2], 0, i, [10, 20], 64))(
        jnp.arange(200)
    )
    offsets = np.asarray(offsets)
    assert offsets[:, 0].max() <= 54 and offsets[:, 1].max() <= 44 and offsets.min() >= 0
    assert len(np.unique(offsets[:, 0])) > 30
