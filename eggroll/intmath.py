"""Integer arithmetic for int8 models: fixed point, saturation, and lookup tables.

Conventions (shared by :mod:`eggroll.integer` and the EGG model):

- Activations and weights are int8 in fixed point with ``ONE = 16`` (value ``v`` means
  ``v / 16``); products accumulate in int32.
- ``saturate`` clips to ``[-127, 127]`` and casts to int8: the only nonlinearity of the EGG
  model besides the tables.
- Division, ``exp2`` and ``log2`` are table lookups computed once in NumPy (float64) when this
  module is imported; at run time everything is integer.

Table sizes and precision (the reference design uses 2^28- and 2^30-entry tables; these are
small enough to live in cache and precise enough for the loss):

- ``INV_TABLE`` (2048 int32 entries): ``round(2^20 / m)`` for the layer norm's mean ``|x|``
  in 1/16 steps. See :func:`norm` for its error bound.
- ``EXP2_TABLE`` (``16 · 24 = 384`` int32 entries): ``round(2^20 · 2^(-k/16))``; terms more
  than 24 log2-units below the max logit are dropped (each < 2^-24 of the max term).
- ``LOG2_TABLE`` (4096 int32 entries): ``round(2^12 · log2(1 + j/4096))`` for the 12-bit
  mantissa. :func:`log_softmax_bits` is within ``2e-3`` bits of the float computation
  (measured bound tested in tests/eggroll/test_intmath.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

ONE = 16  # fixed-point unit of activations and weights
INT8_MAX = 127
BITS_SCALE = 1 << 12  # losses are int32 in units of 2^-12 bits

_INV_BITS = 20
_NORM_ENTRIES = 2048  # mean |x| in 1/16 steps: 0 .. 127·16 = 2032
INV_TABLE = np.round((1 << _INV_BITS) / np.maximum(np.arange(_NORM_ENTRIES), 1)).astype(np.int32)

_EXP2_BITS = 20
_EXP2_RANGE = 24  # log2 units kept below the max logit
EXP2_TABLE = np.round((1 << _EXP2_BITS) * np.exp2(-np.arange(_EXP2_RANGE * ONE) / ONE)).astype(
    np.int32
)

_MANTISSA_BITS = 12
LOG2_TABLE = np.round(
    BITS_SCALE * np.log2(1.0 + np.arange(1 << _MANTISSA_BITS) / (1 << _MANTISSA_BITS))
).astype(np.int32)


def saturate(x: Array) -> Array:
    """Clip an integer array to ``[-127, 127]`` and cast to int8."""
    return jnp.clip(x, -INT8_MAX, INT8_MAX).astype(jnp.int8)


def shift_round(x: Array, shift: int) -> Array:
    """``round(x / 2^shift)`` for int32 ``x`` (halves round up), by arithmetic shift."""
    if shift <= 0:
        return x << (-shift)
    return (x + (1 << (shift - 1))) >> shift


def fan_in_shift(n_in: int) -> int:
    """Right shift after an int8 matmul over ``n_in`` terms: ``log2(ONE) + ceil(log2(n_in)/2)``.

    With inputs and weights of typical size ``ONE`` the output then keeps typical size ``ONE``
    (the integer analogue of a 1/√n_in initialisation).
    """
    return 4 + int(np.ceil(np.log2(max(n_in, 1)) / 2))


def matmul(x: Array, w: Array) -> Array:
    """``x @ w`` for int8 ``x (..., n)`` and int8 ``w (n, m)`` with int32 accumulation."""
    return jax.lax.dot_general(
        x, w, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.int32
    )


def norm(x: Array) -> Array:
    """Layer norm by mean absolute value: ``x · ONE / mean|x|`` over the last axis, int8 → int8.

    ``m = floor(16 · mean|x|)`` indexes ``INV_TABLE``; output ``round(x · INV[m] / 2^12)``. For
    ``mean|x| ≥ 1`` the result is within ``1 + |y| / m`` of the float value ``y`` (``m ≥ 16``).
    """
    n = x.shape[-1]
    x32 = x.astype(jnp.int32)
    total = jnp.sum(jnp.abs(x32), axis=-1, keepdims=True)
    m = jnp.clip((total * ONE) // n, 1, _NORM_ENTRIES - 1)
    inv = jnp.asarray(INV_TABLE)[m]
    return saturate(shift_round(x32 * inv, _INV_BITS - 8))


def log_sum_exp2(logits: Array) -> Array:
    """``log2 Σ_j 2^(l_j / ONE)`` over the last axis in units of ``2^-12`` bits (int32).

    ``logits`` are integers in fixed point ``ONE`` (int8 or int32, ``|l| < 2^15``).
    """
    l32 = logits.astype(jnp.int32)
    top = jnp.max(l32, axis=-1, keepdims=True)
    gap = top - l32  # ≥ 0, in 1/16 log2 units
    terms = jnp.where(
        gap < EXP2_TABLE.shape[0],
        jnp.asarray(EXP2_TABLE)[jnp.minimum(gap, EXP2_TABLE.shape[0] - 1)],
        0,
    )
    total = jnp.sum(terms, axis=-1)  # in [2^20, V · 2^20]
    exponent = 31 - jax.lax.clz(total)  # floor(log2(total))
    mantissa = (total >> (exponent - _MANTISSA_BITS)) - (1 << _MANTISSA_BITS)
    log2_total = (exponent - _EXP2_BITS) * BITS_SCALE + jnp.asarray(LOG2_TABLE)[mantissa]
    return log2_total + top[..., 0] * (BITS_SCALE // ONE)


def log_softmax_bits(logits: Array, targets: Array) -> Array:
    """Cross-entropy in bits of base-2 softmax ``p_j ∝ 2^(l_j/ONE)`` at ``targets``.

    ``logits (..., V)`` integer fixed point ``ONE``; ``targets (...)`` integer class ids.
    Returns int32 ``(...)`` in units of ``2^-12`` bits (divide by ``BITS_SCALE``).
    """
    picked = jnp.take_along_axis(logits.astype(jnp.int32), targets[..., None], axis=-1)[..., 0]
    return log_sum_exp2(logits) - picked * (BITS_SCALE // ONE)
