"""The EGG int8 language model: integer-only forward, recurrent state, learning."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eggroll import integer
from eggroll.intmath import BITS_SCALE
from eggroll.models import egglm

CONFIG = egglm.EggConfig(width=32, layers=2)


@functools.cache
def _params():
    return egglm.init_params(jax.random.key(0), CONFIG)


def _all_dtypes(jaxpr) -> set:
    """Dtypes of every value produced anywhere in a jaxpr, sub-jaxprs (scan bodies) included."""
    found = set()
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            found.add(var.aval.dtype)
        for param in eqn.params.values():
            subs = param if isinstance(param, (list, tuple)) else [param]
            for sub in subs:
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    found |= _all_dtypes(getattr(inner, "jaxpr", inner))
    return found


def test_forward_has_no_float_anywhere_plain_and_perturbed():
    tokens = jnp.arange(17, dtype=jnp.uint8)
    resets = jnp.zeros(16, bool)
    hidden = egglm.init_hidden(CONFIG)
    plain = jax.make_jaxpr(egglm.loss_bits)(_params(), tokens, resets, hidden)
    es = integer.IntEGGROLL(4)
    state = es.init(jax.random.key(1), _params())
    member = jax.make_jaxpr(
        lambda: es.evaluate(state, egglm.fitness, tokens, resets, hidden, has_aux=True)
    )()
    for jaxpr in (plain.jaxpr, member.jaxpr):
        dtypes = _all_dtypes(jaxpr)
        floats = {d for d in dtypes if jnp.issubdtype(d, jnp.floating)}
        assert not floats, floats
        assert jnp.dtype(jnp.int8) in dtypes and jnp.dtype(jnp.int32) in dtypes


def test_params_are_int8():
    for leaf in jax.tree_util.tree_leaves(_params()):
        assert leaf.dtype == jnp.int8


def test_carried_state_equals_one_long_pass():
    tokens = jax.random.randint(jax.random.key(4), (41,), 0, 256).astype(jnp.uint8)
    resets = jnp.zeros(40, bool).at[0].set(True).at[27].set(True)
    hidden = egglm.init_hidden(CONFIG)
    whole, h_whole = egglm.loss_bits(_params(), tokens, resets, hidden)
    first, h_mid = egglm.loss_bits(_params(), tokens[:21], resets[:20], hidden)
    second, h_end = egglm.loss_bits(_params(), tokens[20:], resets[20:], h_mid)
    assert int(whole) == int(first) + int(second)
    np.testing.assert_array_equal(h_whole, h_end)


def test_reset_forgets_the_past():
    tokens = jax.random.randint(jax.random.key(5), (21,), 0, 256).astype(jnp.uint8)
    resets = jnp.zeros(20, bool).at[10].set(True)
    random_state = jax.random.randint(jax.random.key(6), (2, 32), -100, 100).astype(jnp.int8)
    out_a, _ = egglm.logits(_params(), tokens[:-1], resets, egglm.init_hidden(CONFIG))
    out_b, _ = egglm.logits(_params(), tokens[:-1], resets, random_state)
    assert not np.array_equal(out_a[:10], out_b[:10])
    np.testing.assert_array_equal(out_a[10:], out_b[10:])


def test_tiny_model_learns_a_repeating_pattern():
    config = egglm.EggConfig(width=32, layers=1)
    es = integer.IntEGGROLL(128, rank=1, alpha=1.0, alpha_decay=0.003)
    state = es.init(jax.random.key(0), egglm.init_params(jax.random.key(1), config))
    pattern = np.frombuffer(b"abcdefgh", dtype=np.uint8)
    tokens = jnp.asarray(np.tile(pattern, 40)[:65])[None].repeat(128, 0)
    resets = jnp.zeros((128, 64), bool)
    hidden = jnp.zeros((128, 1, 32), jnp.int8)

    @jax.jit
    def generation(state, hidden):
        scores, hidden = es.evaluate(
            state, egglm.fitness, tokens, resets, hidden, in_axes=0, has_aux=True
        )
        return es.tell(state, scores)[0], hidden

    def bits_per_byte(params):
        total, _ = egglm.loss_bits(params, tokens[0], resets[0], hidden[0])
        return int(total) / BITS_SCALE / 64

    start = bits_per_byte(state.params)
    for _ in range(500):
        state, hidden = generation(state, hidden)
    final = bits_per_byte(state.params)
    assert start > 4.0
    assert final < 0.4, (start, final)  # from ~8.8 bits/byte (measured 0.35 at 500 steps)


@pytest.mark.parametrize("bad", [{"width": 0}, {"layers": -1}, {"mlp_ratio": 1.5}])
def test_bad_model_config(bad):
    with pytest.raises(ValueError, match="must be a positive integer"):
        egglm.EggConfig(**bad)


def test_loss_in_slices_equals_one_vmap():
    tokens = jax.random.randint(jax.random.key(4), (10, 9), 0, 256).astype(jnp.uint8)
    resets = jnp.zeros((10, 8), bool).at[3, 2].set(True)
    hidden = jnp.zeros((10, CONFIG.layers, CONFIG.width), jnp.int8)
    whole = jax.vmap(egglm.loss_bits, in_axes=(None, 0, 0, 0))(_params(), tokens, resets, hidden)
    sliced = egglm.batch_loss_bits(_params(), tokens, resets, hidden, slice_size=4)  # 4+4+2
    for a, b in zip(whole, sliced, strict=True):
        np.testing.assert_array_equal(a, b)
