"""``tell`` never writes non-finite parameters (σ schedules that reach 0, go negative or NaN;
an infinite learning rate), and construction/init refuse what would fail later."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import eggroll as egg
from eggroll import integer

PARAMS = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
SCORES = jnp.arange(4.0)


def _finite(tree):
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(tree))


def _run(es, generations):
    state = es.init(jax.random.key(0), PARAMS)
    tell = jax.jit(es.tell)
    history = []
    for _ in range(generations):
        before = state
        state, info = tell(state, SCORES)
        history.append((before, state, {k: float(v) for k, v in info.items()}))
    return history


@pytest.mark.parametrize(
    ("sigma", "first_bad"),
    [
        (optax.cosine_decay_schedule(0.1, 5), 5),  # reaches exactly 0 at generation 5
        (optax.linear_schedule(0.1, -0.1, 2), 1),  # reaches 0 at 1, then negative
        (lambda g: jnp.where(g >= 1, jnp.nan, 0.1), 1),
        (lambda g: jnp.where(g >= 1, jnp.inf, 0.1), 1),
    ],
)
def test_bad_sigma_skips_the_step_keeps_params_and_optimizer_state(sigma, first_bad):
    es = egg.EGGROLL(4, sigma=sigma, optimizer=optax.adam(0.1))
    for g, (before, after, info) in enumerate(_run(es, first_bad + 2)):
        assert _finite(after.params) and int(after.generation) == g + 1
        sigma_ok = np.isfinite(info["sigma"]) and info["sigma"] > 0
        assert info["step_skipped"] == (0.0 if g < first_bad else 1.0), (g, info)
        assert sigma_ok == (g < first_bad)  # the cause is readable on the host
        if g >= first_bad:
            for a, b in zip(
                jax.tree_util.tree_leaves((after.params, after.opt_state)),
                jax.tree_util.tree_leaves((before.params, before.opt_state)),
                strict=True,
            ):
                np.testing.assert_array_equal(a, b)
            assert info["update_norm_lowrank"] == 0.0 and info["update_norm_full"] == 0.0
        else:
            assert info["update_norm_lowrank"] > 0


def test_infinite_learning_rate_is_skipped_with_sigma_reported_fine():
    es = egg.EGGROLL(4, sigma=0.1, optimizer=optax.sgd(jnp.inf))
    (before, after, info), *_ = _run(es, 1)
    assert info["step_skipped"] == 1.0 and info["sigma"] == pytest.approx(0.1)
    np.testing.assert_array_equal(after.params["w"], before.params["w"])
    assert int(after.generation) == 1


def test_skip_guard_works_inside_a_scan_and_leaves_good_steps_bitwise_alone():
    es = egg.EGGROLL(4, sigma=optax.linear_schedule(0.1, 0.0, 3), optimizer=optax.sgd(0.1))
    state = es.init(jax.random.key(0), PARAMS)
    scanned, infos = jax.jit(lambda s: jax.lax.scan(lambda s, _: es.tell(s, SCORES), s, None, 5))(
        state
    )
    np.testing.assert_array_equal(infos["step_skipped"], [0, 0, 0, 1, 1])
    assert _finite(scanned.params) and int(scanned.generation) == 5
    looped = state
    for _ in range(3):
        looped, _ = es.tell(looped, SCORES)
    np.testing.assert_array_equal(scanned.params["w"], looped.params["w"])


@pytest.mark.parametrize(
    "sigma", [0.0, -1.5e-9, float("nan"), float("inf"), np.float32(0.0), jnp.asarray(-1.0)]
)
def test_bad_constant_sigma_is_refused_at_construction(sigma):
    with pytest.raises(ValueError, match="sigma must be"):
        egg.EGGROLL(4, sigma=sigma)


@pytest.mark.parametrize(
    ("population", "sigma"),
    [
        (np.int64(4), np.float32(0.1)),
        (np.int32(4), np.float64(0.1)),
        (jnp.asarray(4), jnp.asarray(0.1)),
        (np.asarray(4), np.asarray(0.1)),
        (4, 1),
    ],
)
def test_numpy_and_jax_scalars_are_accepted(population, sigma):
    es = egg.EGGROLL(population, sigma=sigma)
    assert type(es.population_size) is int and es.population_size == 4
    assert type(es.sigma) is float and es.sigma == pytest.approx(float(sigma))
    assert type(integer.IntEGGROLL(population).population_size) is int


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "adam"}, r"optax.GradientTransformation such as .* the string 'adam'"),
        ({"optimizer": 0.01}, "optimizer must be an optax.GradientTransformation"),
        ({"sigma": "0.1"}, "sigma must be a positive number"),
        ({"population_size": 4.0}, "population_size must be an integer"),
        ({"population_size": np.float32(4)}, "population_size must be an integer"),
        ({"population_size": True}, "population_size must be an integer"),
        ({"population_size": jnp.ones(2, jnp.int32)}, "population_size must be an integer"),
        ({"chunk_size": np.int64(3)}, "does not divide the 2 noise draws"),
    ],
)
def test_construction_errors_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        egg.EGGROLL(**{"population_size": 4, "sigma": 0.1, **kwargs})


@pytest.mark.parametrize("params", [{}, None, [], {"a": {}, "b": ()}, {"w": None}])
@pytest.mark.parametrize("make", [lambda: egg.EGGROLL(4, 0.1), lambda: integer.IntEGGROLL(4)])
def test_empty_params_are_refused_at_init(make, params):
    with pytest.raises(ValueError, match="params has no array leaves"):
        make().init(jax.random.key(0), params)


def test_non_array_leaves_are_refused_at_init():
    with pytest.raises(ValueError, match="leaf 'name' is a str"):
        egg.EGGROLL(4, 0.1).init(0, {"name": "layer", "w": jnp.ones((2, 2))})


def test_has_aux_mismatches_give_clear_errors():
    es = egg.EGGROLL(4, sigma=0.1)
    state = es.init(0, PARAMS)
    with pytest.raises(
        ValueError, match=r"has_aux=True: fitness_fn must return a pair \(score, aux\)"
    ):
        es.evaluate(state, lambda v: jnp.sum(v["b"]), has_aux=True)
    with pytest.raises(ValueError, match="has_aux=True.*got a tuple of 3"):
        es.step(state, lambda v: (jnp.sum(v["b"]), 1.0, 2.0), has_aux=True)
    with pytest.raises(ValueError, match="pass has_aux=True"):
        es.evaluate(state, lambda v: (jnp.sum(v["b"]), v["b"]))


def test_integer_pairs_compare_large_int_scores_exactly():
    """int32 scores that float32 rounds together (above 2^24) still give the right sign."""
    import jax
    import jax.numpy as jnp

    from eggroll import integer

    es = integer.IntEGGROLL(4, rank=1, noise="table")
    state = es.init(jax.random.key(0), {"w": jnp.zeros((4, 4), jnp.int8)})
    big = 1 << 25  # float32 cannot tell big from big + 1
    scores = jnp.asarray([big + 1, big, big, big + 1], jnp.int32)
    _, info = es.tell(state, scores)
    assert int(info["active_pairs"]) == 2
