"""Learning with the black-box API only, and a generation under lax.scan."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import eggroll as egg

TARGET = jnp.where(jax.random.bernoulli(jax.random.key(9), 0.5, (16, 16)), 1.0, -1.0)


def sign_agreement(view, target):
    """Non-differentiable: how many entries of W have the target's sign (0..256)."""
    w = egg.materialize(view)["w"]
    return jnp.sum(jnp.sign(w) == target).astype(jnp.float32)


def test_eggroll_learns_a_non_differentiable_objective():
    es = egg.EGGROLL(128, sigma=0.1, rank=1, optimizer=optax.adam(0.05))
    state = es.init(jax.random.key(0), {"w": 0.1 * jax.random.normal(jax.random.key(1), (16, 16))})
    start = float(sign_agreement(state.params, TARGET))
    for _ in range(60):
        state, info = es.step(state, sign_agreement, TARGET)
    final = float(sign_agreement(state.params, TARGET))
    assert start < 0.7 * 256
    assert final >= 0.95 * 256, (start, final)


def test_openes_learns_the_same_objective():
    es = egg.OpenES(128, sigma=0.1, optimizer=optax.adam(0.05))
    state = es.init(jax.random.key(0), {"w": 0.1 * jax.random.normal(jax.random.key(1), (16, 16))})
    for _ in range(60):
        state, _ = es.step(state, sign_agreement, TARGET)
    assert float(sign_agreement(state.params, TARGET)) >= 0.95 * 256


def _quadratic(view, x):
    """Per-member data (in_axes=0): x is this member's slice."""
    h = egg.nn.dense(x, view["w"]) + egg.nn.vector(view["b"])
    return -jnp.sum((h - 1.0) ** 2)


def test_python_loop_and_lax_scan_give_bitwise_identical_parameters():
    es = egg.EGGROLL(16, sigma=0.05, rank=2, optimizer=optax.adam(1e-2))
    params = {"w": jax.random.normal(jax.random.key(0), (4, 3)), "b": jnp.zeros(3)}
    data = jax.random.normal(jax.random.key(1), (5, 16, 4))  # (generations, members, features)

    @jax.jit
    def generation(state, x):
        return es.step(state, _quadratic, x, in_axes=0)

    state = es.init(jax.random.key(2), params)
    for g in range(5):
        state, _ = generation(state, data[g])
    looped = state

    @jax.jit
    def scanned(state):
        return jax.lax.scan(generation, state, data)

    scanned_state, infos = scanned(es.init(jax.random.key(2), params))
    assert infos["fitness_mean"].shape == (5,)
    for a, b in zip(
        jax.tree_util.tree_leaves(looped.params),
        jax.tree_util.tree_leaves(scanned_state.params),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert int(scanned_state.generation) == 5
    # And it learned: the loss went down.
    assert infos["fitness_mean"][-1] > infos["fitness_mean"][0]


def test_sigma_and_learning_rate_schedules():
    lr = optax.linear_schedule(0.1, 0.0, transition_steps=4)
    sigma = optax.exponential_decay(0.2, transition_steps=1, decay_rate=0.5)
    es = egg.EGGROLL(8, sigma=sigma, optimizer=optax.sgd(lr))
    state = es.init(jax.random.key(0), {"w": jnp.ones((3, 3))})
    sigmas, norms = [], []
    for _ in range(5):
        state, info = es.tell(state, jnp.arange(8.0))
        sigmas.append(float(info["sigma"]))
        norms.append(float(info["update_norm_lowrank"]))
    np.testing.assert_allclose(sigmas, [0.2, 0.1, 0.05, 0.025, 0.0125], rtol=1e-6)
    assert norms[0] > 0 and norms[-1] == 0.0  # learning rate reached zero


def test_nonfinite_fitness_never_poisons_parameters():
    es = egg.EGGROLL(8, sigma=0.1, optimizer=optax.adam(0.1))
    state = es.init(jax.random.key(0), {"w": jnp.ones((3, 3)), "b": jnp.zeros(3)})
    scores = jnp.array([1.0, jnp.nan, 2.0, jnp.inf, -jnp.inf, 0.5, 3.0, 1.0])
    new, info = es.tell(state, scores)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(new.params))
    np.testing.assert_allclose(info["nonfinite_fraction"], 3 / 8)
    np.testing.assert_allclose(info["fitness_max"], 3.0)
    # All scores non-finite: the parameters do not move at all.
    frozen, info = es.tell(state, jnp.full(8, jnp.nan))
    for a, b in zip(
        jax.tree_util.tree_leaves(frozen.params),
        jax.tree_util.tree_leaves(state.params),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert float(info["nonfinite_fraction"]) == 1.0


def test_frozen_leaves_are_neither_perturbed_nor_updated():
    es = egg.EGGROLL(
        8, sigma=0.1, optimizer=optax.adamw(0.1, weight_decay=0.5), leaf_rule={"^emb$": "frozen"}
    )
    params = {"emb": jnp.ones((5, 4)), "w": jnp.ones((4, 4))}
    state = es.init(jax.random.key(0), params)
    view = es.ask(state)[1]
    np.testing.assert_array_equal(view["emb"], params["emb"])
    new, _ = es.tell(state, jnp.arange(8.0))
    np.testing.assert_array_equal(new.params["emb"], params["emb"])
    assert not np.allclose(new.params["w"], params["w"])


@functools.cache
def _batched_strategy():
    return egg.EGGROLL(8, sigma=0.1, eval_batch_size=3)


def test_eval_batch_size_gives_the_same_scores_as_one_vmap():
    params = {"w": jax.random.normal(jax.random.key(0), (4, 3)), "b": jnp.zeros(3)}
    x = jax.random.normal(jax.random.key(1), (8, 4))
    full = egg.EGGROLL(8, sigma=0.1)
    state = full.init(jax.random.key(3), params)
    np.testing.assert_allclose(
        _batched_strategy().evaluate(state, _quadratic, x, in_axes=0),
        full.evaluate(state, _quadratic, x, in_axes=0),
        rtol=1e-6,
    )
