"""Invalid configurations are rejected at construction (or init) with a message that says what
to change."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eggroll as egg


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"population_size": 7, "sigma": 0.1}, "odd but antithetic=True"),
        ({"population_size": 1, "sigma": 0.1, "antithetic": False}, "population_size must be"),
        ({"population_size": 8, "sigma": 0.0}, "sigma must be a positive"),
        ({"population_size": 8, "sigma": -1.0}, "sigma must be a positive"),
        ({"population_size": 8, "sigma": float("nan")}, "sigma must be a positive"),
        ({"population_size": 8, "sigma": 0.1, "rank": 0}, "rank must be an integer ≥ 1"),
        ({"population_size": 8, "sigma": 0.1, "noise_reuse": 0}, "noise_reuse must be"),
        ({"population_size": 8, "sigma": 0.1, "noise": "gauss"}, "noise must be 'keys' or"),
        ({"population_size": 8, "sigma": 0.1, "table_size": 10}, "table_size must be"),
        (
            {"population_size": 8, "sigma": 0.1, "chunk_size": 3},
            "does not divide the 4 noise draws",
        ),
        (
            {"population_size": 12, "sigma": 0.1, "shaping": egg.shaping.group_z_score(5)},
            "do not divide population_size=12",
        ),
        (
            {"population_size": 12, "sigma": 0.1, "shaping": egg.shaping.group_z_score(3)},
            "would split antithetic pairs",
        ),
        ({"population_size": 8, "sigma": 0.1, "leaf_rule": {"w": "sideways"}}, "use one of"),
    ],
)
def test_invalid_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        egg.EGGROLL(**kwargs)


def test_a_leaf_narrower_than_the_rank_is_perturbed_at_its_full_rank():
    es = egg.EGGROLL(8, sigma=0.1, rank=4)
    params = {"w": jnp.zeros((3, 10)), "v": jnp.zeros((10, 6))}
    state = es.init(jax.random.key(0), params)
    view = es.ask(state)[2]
    assert view["w"].a.shape == (3, 3) and view["w"].b.shape == (10, 3)  # rank min(3, 10)
    assert view["v"].a.shape == (10, 4) and view["v"].b.shape == (6, 4)  # the strategy's rank
    dense = np.asarray(view["w"].materialize())
    assert np.linalg.matrix_rank(dense) == 3
    # The estimate keeps unit-variance noise: 1/√3 for the capped leaf.
    assert es._estimate_scale(es.leaf_specs(params)[1]) == pytest.approx(3**-0.5)


def test_integer_leaves_are_rejected_in_float_mode():
    es = egg.EGGROLL(8, sigma=0.1)
    with pytest.raises(ValueError, match="leaf 'w' has dtype int8.*eggroll.integer"):
        es.init(jax.random.key(0), {"w": jnp.zeros((3, 3), jnp.int8)})
    # Frozen integer leaves are fine.
    egg.EGGROLL(8, sigma=0.1, leaf_rule={"^w$": "frozen"}).init(
        jax.random.key(0), {"w": jnp.zeros((3, 3), jnp.int8)}
    )


def test_lowrank_rule_on_a_vector_is_rejected():
    es = egg.EGGROLL(8, sigma=0.1, leaf_rule={"b": "lowrank"})
    with pytest.raises(ValueError, match="cannot be low-rank"):
        es.init(jax.random.key(0), {"b": jnp.zeros(3)})


def test_bad_evaluate_and_tell_arguments():
    es = egg.EGGROLL(8, sigma=0.1)
    state = es.init(jax.random.key(0), {"w": jnp.zeros((3, 3))})
    with pytest.raises(ValueError, match=r"tell expects fitness of shape \(8,\)"):
        es.tell(state, jnp.zeros(7))
    with pytest.raises(ValueError, match="leading axis of population_size=8"):
        es.evaluate(state, lambda v, x: jnp.sum(x), jnp.zeros((4, 2)), in_axes=0)
    with pytest.raises(ValueError, match="in_axes entries must be None"):
        es.evaluate(state, lambda v, x: jnp.sum(x), jnp.zeros((8, 2)), in_axes=1)
    with pytest.raises(ValueError, match="must return a scalar"):
        es.evaluate(state, lambda v: jnp.zeros(2))
