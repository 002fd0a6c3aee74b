"""Integer ops bit-exact against NumPy; table ops within their stated bounds of float math."""

import jax.numpy as jnp
import numpy as np
import pytest

from eggroll import intmath

RNG = np.random.default_rng(0)


def np_shift_round(x, shift):
    return (x + (1 << (shift - 1))) >> shift


def test_saturate_and_shift_round_are_exact():
    x = RNG.integers(-(1 << 20), 1 << 20, size=10_000, dtype=np.int64)
    saturated = intmath.saturate(jnp.asarray(x, jnp.int32))
    np.testing.assert_array_equal(saturated, np.clip(x, -127, 127))
    for shift in (1, 4, 8, 12):
        np.testing.assert_array_equal(
            intmath.shift_round(jnp.asarray(x, jnp.int32), shift), np_shift_round(x, shift)
        )


def test_int8_matmul_is_exact():
    x = RNG.integers(-127, 128, size=(7, 33), dtype=np.int64)
    w = RNG.integers(-127, 128, size=(33, 5), dtype=np.int64)
    out = intmath.matmul(jnp.asarray(x, jnp.int8), jnp.asarray(w, jnp.int8))
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(out, x @ w)


def np_norm(x):
    n = x.shape[-1]
    m = np.clip((np.abs(x).sum(-1, keepdims=True) * 16) // n, 1, 2047)
    return np.clip(np_shift_round(x * intmath.INV_TABLE[m].astype(np.int64), 12), -127, 127)


@pytest.mark.parametrize("scale", [3, 16, 60])
def test_norm_bit_exact_and_within_bound_of_float(scale):
    x = np.clip(np.round(RNG.normal(0, scale, size=(200, 64))), -127, 127).astype(np.int64)
    out = np.asarray(intmath.norm(jnp.asarray(x, jnp.int8))).astype(np.int64)
    np.testing.assert_array_equal(out, np_norm(x))
    mean_abs = np.abs(x).mean(-1, keepdims=True)
    exact = np.clip(16 * x / mean_abs, -127, 127)
    m = np.floor(16 * mean_abs)
    ok = mean_abs[:, 0] >= 1
    bound = 1 + np.abs(exact) / m
    assert np.all((np.abs(out - exact) <= bound)[ok])
    # The normalised rows have mean |x| ≈ ONE (unless saturated).
    assert abs(np.abs(out).mean() - 16) < 1.5


def np_log_softmax_bits(logits, targets):
    top = logits.max(-1, keepdims=True)
    gap = top - logits
    terms = np.where(gap < 384, intmath.EXP2_TABLE[np.minimum(gap, 383)], 0).astype(np.int64)
    total = terms.sum(-1)
    exponent = np.floor(np.log2(total)).astype(np.int64)
    mantissa = (total >> (exponent - 12)) - 4096
    lse = (exponent - 20) * 4096 + intmath.LOG2_TABLE[mantissa] + top[..., 0] * 256
    return lse - np.take_along_axis(logits, targets[..., None], -1)[..., 0] * 256


@pytest.mark.parametrize("spread", [1, 16, 64])
def test_log_softmax_bits_exact_and_within_2e3_bits_of_float(spread):
    logits = np.clip(np.round(RNG.normal(0, spread, size=(500, 256))), -127, 127).astype(np.int64)
    targets = RNG.integers(0, 256, size=500)
    got = np.asarray(intmath.log_softmax_bits(jnp.asarray(logits, jnp.int8), jnp.asarray(targets)))
    np.testing.assert_array_equal(got, np_log_softmax_bits(logits, targets))
    z = logits / 16.0
    exact = np.log2(np.exp2(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    exact = exact - np.take_along_axis(z, targets[:, None], -1)[:, 0]
    assert np.max(np.abs(got / intmath.BITS_SCALE - exact)) < 2e-3


def test_uniform_logits_give_eight_bits():
    bits = intmath.log_softmax_bits(jnp.zeros((1, 256), jnp.int8), jnp.array([3]))
    assert abs(int(bits[0]) / intmath.BITS_SCALE - 8.0) < 1e-3
