"""EGG: an integer-only recurrent byte language model (int8 weights, integer activations).

After the EGG model of Sarkar et al. (2025). Everything in the forward pass is integer: int8
weights and activations in fixed point ``ONE = 16``, int32 accumulators, the saturating int8
cast as the only nonlinearity, a layer norm that divides by mean ``|x|`` through a table, and a
base-2 log-softmax loss through ``exp2``/``log2`` tables (:mod:`eggroll.intmath`).

One block (pre-norm, residual adds saturate to int8)::

    u = norm(x)
    z = gate(u) + 128                      # int gate in [1, 255] / 256, no sigmoid
    c = cand(u)
    h_t = (h_{t-1} · (256 − z_t) + c_t · z_t) / 256     # minGRU-style recurrence, reset at
    x = sat(x + out(h))                                  # document starts
    x = sat(x + down(up(norm(x))))         # 4× MLP; the int8 saturation is its nonlinearity

The gates depend only on the input, so every matmul runs over all time steps at once and only
the elementwise recurrence is sequential. The recurrent state ``(layers, width)`` int8 is
carried across training steps and reset where a document starts.

Parameters (all int8, layers stacked on a leading axis)::

    embed (256, d); layers/{gate, cand, out} (L, d, d); layers/{up} (L, d, 4d);
    layers/{down} (L, 4d, d); head (d, 256)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from eggroll import integer
from eggroll.intmath import INT8_MAX, ONE, fan_in_shift, log_softmax_bits, norm, saturate
from eggroll.intmath import shift_round as _shift

Array = jax.Array
VOCAB = 256


@dataclasses.dataclass(frozen=True)
class EggConfig:
    """Shape of an EGG model: ``layers`` blocks of width ``width`` (MLP ``mlp_ratio × width``)."""

    width: int = 128
    layers: int = 2
    mlp_ratio: int = 4

    def __post_init__(self):
        for name in ("width", "layers", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"EggConfig.{name} must be a positive integer, got {value!r}")


def init_params(key: Array, config: EggConfig) -> dict[str, Any]:
    """Random int8 parameters: entries ``round(ONE · N(0, 1))`` (typical size ``ONE``)."""
    d, h, n = config.width, config.width * config.mlp_ratio, config.layers
    shapes = {
        "embed": (VOCAB, d),
        "head": (d, VOCAB),
        "layers": {
            "gate": (n, d, d),
            "cand": (n, d, d),
            "out": (n, d, d),
            "up": (n, d, h),
            "down": (n, h, d),
        },
    }
    flat, treedef = jax.tree_util.tree_flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    keys = jax.random.split(key, len(flat))
    leaves = [
        jnp.clip(jnp.round(ONE * jax.random.normal(k, s)), -INT8_MAX, INT8_MAX).astype(jnp.int8)
        for k, s in zip(keys, flat, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def init_hidden(config: EggConfig) -> Array:
    """Zero recurrent state ``(layers, width)`` int8 for one stream."""
    return jnp.zeros((config.layers, config.width), jnp.int8)


def dense(x: Array, w: Any) -> Array:
    """int8 ``x (..., n_in)`` through an int8 matrix or member view → int8 ``(..., n_out)``."""
    return saturate(_shift(integer.matmul(x, w), fan_in_shift(x.shape[-1])))


def _recurrence(h0: Array, gate: Array, cand: Array, resets: Array) -> tuple[Array, Array]:
    """``h_t = (h_{t-1}(256 − z_t) + c_t z_t) / 256`` over ``T``; ``h_{t-1} = 0`` at resets.

    ``h0 (d,)`` int8, ``gate``/``cand (T, d)`` int8, ``resets (T,)`` bool → ``(h_T, h (T, d))``.
    """
    z = gate.astype(jnp.int32) + 128

    def step(h, inputs):
        z_t, c_t, reset_t = inputs
        h = jnp.where(reset_t, 0, h)
        h = _shift(h * (256 - z_t) + c_t.astype(jnp.int32) * z_t, 8)
        return h, h

    h_last, hs = jax.lax.scan(step, h0.astype(jnp.int32), (z, cand, resets))
    return h_last.astype(jnp.int8), hs.astype(jnp.int8)


def _block(x: Array, layer: dict[str, Any], h0: Array, resets: Array) -> tuple[Array, Array]:
    u = norm(x)
    h_last, hs = _recurrence(h0, dense(u, layer["gate"]), dense(u, layer["cand"]), resets)
    x = saturate(x.astype(jnp.int32) + dense(hs, layer["out"]))
    mlp = dense(dense(norm(x), layer["up"]), layer["down"])
    return saturate(x.astype(jnp.int32) + mlp), h_last


def logits(params: dict[str, Any], inputs: Array, resets: Array, hidden: Array):
    """Integer logits of the next byte.

    ``inputs (T,)`` uint8/int bytes, ``resets (T,)`` bool (document starts), ``hidden (L, d)``
    int8 → ``(logits (T, 256) int8 in fixed point ONE, new hidden (L, d) int8)``.
    """
    x = integer.embed(inputs.astype(jnp.int32), params["embed"])

    def layer_step(x, layer_and_h):
        layer, h0 = layer_and_h
        x, h_last = _block(x, layer, h0, resets)
        return x, h_last

    x, new_hidden = jax.lax.scan(layer_step, x, (params["layers"], hidden))
    return dense(norm(x), params["head"]), new_hidden


def loss_bits(
    params: dict[str, Any], tokens: Array, resets: Array, hidden: Array
) -> tuple[Array, Array]:
    """Total cross-entropy of ``tokens[1:]`` given ``tokens[:-1]``, in units of ``2^-12`` bits.

    ``tokens (T + 1,)``, ``resets (T,)``, ``hidden (L, d)`` → ``(int32 scalar, new hidden)``.
    """
    out, new_hidden = logits(params, tokens[:-1], resets, hidden)
    bits = log_softmax_bits(out, tokens[1:].astype(jnp.int32))
    return jnp.sum(bits), new_hidden


def batch_loss_bits(
    params: dict[str, Any], tokens: Array, resets: Array, hidden: Array, slice_size: int = 32
) -> tuple[Array, Array]:
    """:func:`loss_bits` of the unperturbed model for a batch of streams.

    ``tokens (B, T + 1)``, ``resets (B, T)``, ``hidden (B, L, d)`` → ``(int32 (B,), hidden)``.
    Streams are evaluated ``slice_size`` at a time (a loop of vmaps): the same numbers as one
    vmap over all ``B``, but each slice's activations stay in cache, which on a CPU is several
    times faster for a few hundred streams (``0``: one vmap).
    """
    return jax.lax.map(
        lambda xs: loss_bits(params, *xs), (tokens, resets, hidden), batch_size=slice_size
    )


def fitness(
    params: dict[str, Any], tokens: Array, resets: Array, hidden: Array
) -> tuple[Array, Array]:
    """ES fitness of one member: ``−loss_bits`` (higher is better) and the carried state."""
    total, new_hidden = loss_bits(params, tokens, resets, hidden)
    return -total, new_hidden
