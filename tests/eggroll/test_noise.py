"""Antithetic pairs, noise reuse, and stability of noise ids."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

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
