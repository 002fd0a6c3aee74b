"""RWKV-7 ("Goose", architecture version ``x070``) written with eggroll.nn ops.

A recurrent language model: each sequence keeps a constant-size state (per layer the token
shift of the time-mix and of the channel-mix, ``(C,)`` each, and the WKV matrix state
``(H, N, N)``, ``N = head_size``) instead of a KV cache, so decoding memory does not grow with
the number of generated tokens. Every matrix goes through :func:`eggroll.nn.dense` /
:func:`eggroll.nn.embed`, so the same code runs on plain parameters and on EGGROLL member
views; layers are stacked on a leading axis and consumed by ``lax.scan``.

One block (pre-norm, residual; ``shift(h)`` is the previous token's ``h``, the state's for the
first token)::

    h = layer_norm(x, ln1)
    x_* = h + (shift(h) − h) · x_*              for * in r, w, k, v, a, g (token shift)
    r, k, v = x_r @ receptance, x_k @ key, x_v @ value
    w = exp(−e^{−1/2} · σ(w0 + tanh(x_w @ w1) @ w2))             data-dependent decay
    a = σ(a0 + (x_a @ a1) @ a2)                                   in-context learning rate
    g = σ(x_g @ g1) @ g2                                          output gate
    κ = normalise_per_head(k · k_k);  k = k · (1 + (a − 1) · k_a)
    v = v + (v_first − v) · σ(v0 + (x_v @ v1) @ v2)               (layers > 0; layer 0 sets
                                                                   v_first = v)
    S = S · diag(w) − (S κ)(κ · a)ᵀ + v kᵀ;  y = S r              per head (the delta rule)
    y = group_norm(y, ln_x) + Σ_head(r · k · r_k) · v
    x = x + (y · g) @ output
    h = layer_norm(x, ln2)
    x = x + relu((h + (shift(h) − h) · ffn_x_k) @ ffn_key)² @ ffn_value
    x_0 = layer_norm(embed[token], ln0);  logits = layer_norm(x_L, ln_out) @ head

Parameters (float32; our matrices are ``(in, out)``, the transpose of PyTorch's Linear)::

    embed (V, C); ln0_weight, ln0_bias, ln_out_weight, ln_out_bias (C,); head (C, V)
    layers/{ln1,ln2,ln_x}_{weight,bias} (L, C)
    layers/{x_r, x_w, x_k, x_v, x_a, x_g, w0, a0, v0, k_k, k_a, r_k, ffn_x_k} (L, C)
    layers/{receptance, key, value, output} (L, C, C)
    layers/w1 (L, C, Dw), w2 (L, Dw, C); a1/a2 (Da); v1/v2 (Dv); g1/g2 (Dg)
    layers/ffn_key (L, C, F); layers/ffn_value (L, F, C)

Layer 0's ``v0, v1, v2`` exist (stacking needs them) but are unused, as in the reference.

Two paths: :func:`forward` runs a whole (left-padded) prompt per layer, the projections as
one GEMM over all tokens and the WKV recurrence as a ``lax.scan`` over time; :func:`step`
runs one token per sequence with no scan over time (the layers unrolled). :func:`generate`
is a prefill then that step inside one ``lax.while_loop``, with the state and the parameters
split per layer once, before the loop. Model folders (``config.json`` with
``model_type: rwkv7`` + ``model.safetensors`` with the official tensor names) are made from
the official ``.pth`` releases by :mod:`eggroll.models.rwkv_convert`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import eggroll as egg
from eggroll.checkpoint import write_atomic
from eggroll.models import generate as generate_lib
from eggroll.models import llm
from eggroll.models.generate import Generation
from eggroll.models.hf import ModelFolderError
from eggroll.nn import LowRank

Array = jax.Array

MODEL_TYPE = "rwkv7"
VERSION = "x070"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
COMPUTE_DTYPES = ("float32", "bfloat16")
# Matrices: low-rank noise (the big projections and the small LoRA-style factors alike: a
# rank-r view costs O(r·(n_in + n_out)) per member, a full-rank one would materialise every
# member's matrix). Vectors (mixing coefficients, norms, biases): full-rank noise.
MATRIX_LEAVES = frozenset(
    {"embed", "head", "receptance", "key", "value", "output", "ffn_key", "ffn_value"}
    | {"w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2"}
)
LAYER_VECTORS = (
    "ln1_weight", "ln1_bias", "ln2_weight", "ln2_bias", "ln_x_weight", "ln_x_bias",
    "x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "v0", "k_k", "k_a", "r_k", "ffn_x_k",
)  # fmt: skip
_DECAY_SCALE = math.exp(-0.5)  # w = exp(−e^{−1/2} σ(·)) ∈ (e^{−e^{−1/2}}, 1)


def _lora_size(width: int, factor: float, power: float) -> int:
    """The official LoRA widths: ``max(32, round(factor · C^power / 32) · 32)``."""
    return max(32, int(round(factor * width**power / 32)) * 32)


@dataclasses.dataclass(frozen=True)
class RWKV7Config:
    """Shape and numerics of an RWKV-7 model (hashable: a static ``jit`` argument).

    ``intermediate_size`` defaults to ``4 · hidden_size``; the LoRA widths (``decay_lora``,
    ``a_lora``, ``v_lora``, ``gate_lora``) to the official formulas of the width (64, 64, 32,
    128 at width 768). ``eos_token_id`` defaults to 0 (the World vocabulary's end of text), also
    the pad id. The model is recurrent: ``max_position_embeddings`` is unbounded.
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    head_size: int = 64
    intermediate_size: int | None = None
    decay_lora: int | None = None
    a_lora: int | None = None
    v_lora: int | None = None
    gate_lora: int | None = None
    layer_norm_eps: float = 1e-5
    group_norm_eps: float = 64e-5
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = (0,)
    pad_token_id: int | None = 0
    compute_dtype: str = "float32"

    def __post_init__(self):
        c = self.hidden_size
        defaults = {
            "intermediate_size": 4 * c,
            "decay_lora": _lora_size(c, 1.8, 0.5),
            "a_lora": _lora_size(c, 1.8, 0.5),
            "v_lora": _lora_size(c, 1.3, 0.5),
            "gate_lora": _lora_size(c, 0.6, 0.8),
        }
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        for name in ("vocab_size", "hidden_size", "num_layers", "head_size", *defaults):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RWKV7Config.{name} must be a positive integer, got {value!r}")
        if c % self.head_size:
            raise ValueError(f"hidden_size={c} is not a multiple of head_size={self.head_size}")
        if not self.layer_norm_eps > 0 or not self.group_norm_eps > 0:
            raise ValueError("layer_norm_eps and group_norm_eps must be positive")
        llm.check_dtype_and_eos(self, COMPUTE_DTYPES)

    @property
    def num_heads(self) -> int:
        return self.hidden_size // self.head_size

    @property
    def dtype(self) -> jnp.dtype:
        return jnp.dtype(self.compute_dtype)

    @property
    def model_type(self) -> str:
        return MODEL_TYPE

    @property
    def max_position_embeddings(self) -> int:
        """Recurrent: no position limit (for code written for attention models)."""
        return 2**31 - 1

    def replace(self, **changes: Any) -> RWKV7Config:
        return dataclasses.replace(self, **changes)


def tiny_config(**changes: Any) -> RWKV7Config:
    """A small model for tests and benchmarks (vocabulary 264, width 128, 4 layers, 4 heads
    of 32, LoRA widths 32; about 1.0 M parameters)."""
    spec = dict(vocab_size=264, hidden_size=128, num_layers=4, head_size=32, eos_token_id=257)
    spec["pad_token_id"] = 258
    return RWKV7Config(**{**spec, **changes})


def param_shapes(config: RWKV7Config) -> dict[str, Any]:
    """The parameter layout: leaf path → shape."""
    c = config
    L, C, F, V = c.num_layers, c.hidden_size, c.intermediate_size, c.vocab_size
    layers: dict[str, tuple[int, ...]] = {name: (L, C) for name in LAYER_VECTORS}
    for name in ("receptance", "key", "value", "output"):
        layers[name] = (L, C, C)
    for prefix, d in (("w", c.decay_lora), ("a", c.a_lora), ("v", c.v_lora), ("g", c.gate_lora)):
        layers[f"{prefix}1"] = (L, C, d)
        layers[f"{prefix}2"] = (L, d, C)
    layers["ffn_key"] = (L, C, F)
    layers["ffn_value"] = (L, F, C)
    top = {name: (C,) for name in ("ln0_weight", "ln0_bias", "ln_out_weight", "ln_out_bias")}
    return {"embed": (V, C), **top, "head": (C, V), "layers": layers}


def init_params(key: Array, config: RWKV7Config) -> dict[str, Any]:
    """Random float32 parameters for tests and benchmarks (not the official initialisation):
    matrices ``N(0, 1/fan_in)`` (the embedding ``N(0, 1)``), norm weights 1, biases 0, mixing
    coefficients ``U(0, 1)``, ``k_k`` 1, the rest ``N(0, 0.5²)``."""

    def init(name: str, shape: tuple[int, ...], k: Array) -> Array:
        if name == "embed":
            return jax.random.normal(k, shape, jnp.float32)
        if name in MATRIX_LEAVES:
            return jax.random.normal(k, shape, jnp.float32) / math.sqrt(shape[-2])
        if name.endswith("_weight") or name == "k_k":
            return jnp.ones(shape, jnp.float32)
        if name.endswith("_bias"):
            return jnp.zeros(shape, jnp.float32)
        if name.startswith("x_") or name in ("ffn_x_k", "k_a"):
            return jax.random.uniform(k, shape, jnp.float32)
        return 0.5 * jax.random.normal(k, shape, jnp.float32)

    return llm.init_by_name(key, param_shapes(config), init)


def leaf_rule(path: str, leaf: Any) -> str:
    """EGGROLL leaf rule: matrices (:data:`MATRIX_LEAVES`, the LoRA-style factors included)
    low-rank, every vector full-rank. Pass it as ``egg.EGGROLL(..., leaf_rule=rwkv7.leaf_rule)``
    (the default rule would treat a stacked ``(L, C)`` vector as a matrix)."""
    return "lowrank" if path.rsplit("/", 1)[-1] in MATRIX_LEAVES else "full"


count_params = llm.count_params


# ------------------------------------------------------------------------------ state
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class State:
    """The recurrent state of ``B`` sequences (float32).

    ``att_shift``, ``ffn_shift``: ``(L, B, C)``, the previous token's normalised input of the
    time-mix and channel-mix. ``wkv``: ``(L, B, H, N, N)``, indexed ``[value, key]`` (the
    reference layout).
    """

    att_shift: Array
    wkv: Array
    ffn_shift: Array


def init_state(config: RWKV7Config, batch: int) -> State:
    """The zero state (the start of a sequence)."""
    c = config
    vec = jnp.zeros((c.num_layers, batch, c.hidden_size), jnp.float32)
    wkv = jnp.zeros((c.num_layers, batch, c.num_heads, c.head_size, c.head_size), jnp.float32)
    return State(vec, wkv, vec)


def state_bytes(config: RWKV7Config, batch: int = 1) -> int:
    """Bytes of the state of ``batch`` sequences (constant during generation)."""
    c = config
    return 4 * batch * c.num_layers * (2 * c.hidden_size + c.num_heads * c.head_size**2)


# ------------------------------------------------------------------------------ pieces
def layer_norm(x: Array, weight: Array, bias: Array, eps: float) -> Array:
    """Layer norm over the last axis (float32 statistics, biased variance)."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    return y * egg.nn.vector(weight) + egg.nn.vector(bias)


def _dense(x: Array, w: Any, dtype: jnp.dtype) -> Array:
    """``x @ w`` in the compute dtype, returned as float32."""
    return egg.nn.dense(x.astype(dtype), w).astype(jnp.float32)


def _shift(h: Array, prev: Array, mask: Array | None) -> tuple[Array, Array]:
    """Token shift of ``h (B, T, C)`` given the state ``prev (B, C)``: ``(previous (B, T, C),
    new state (B, C))``. With a left-padding ``mask`` a token after padding sees ``prev``, and
    a row whose last token is padding keeps ``prev``."""
    before = jnp.concatenate([prev[:, None], h[:, :-1]], axis=1)
    if mask is None:
        return before, h[:, -1]
    real_before = jnp.concatenate([jnp.zeros_like(mask[:, :1]), mask[:, :-1]], axis=1)
    before = jnp.where(real_before[..., None], before, prev[:, None])
    return before, jnp.where(mask[:, -1:], h[:, -1], prev)


def _wkv_update(state, r, w, k, v, kappa, a):
    """One token of the generalised delta rule for ``(..., H, N)`` inputs and a state
    ``(..., H, N, N)``: ``S' = S diag(w) − (S κ)(κ a)ᵀ + v kᵀ``, ``y = S' r``. The rank-one
    term is applied as a mat-vec and an outer product (``O(N²)`` per head, not the reference's
    ``O(N³)`` matrix product)."""
    sk = jnp.einsum("...ij,...j->...i", state, kappa)
    state = (
        state * w[..., None, :]
        - sk[..., :, None] * (kappa * a)[..., None, :]
        + v[..., :, None] * k[..., None, :]
    )
    return state, jnp.einsum("...ij,...j->...i", state, r)


def _wkv(state, r, w, k, v, kappa, a, mask):
    """The recurrence over ``T`` tokens (inputs ``(B, T, H, N)``): a ``lax.scan`` over time,
    or one direct update when ``T == 1`` (the decode step). Padding leaves the state as it
    was. Returns ``(state, y (B, T, H, N))``."""
    if r.shape[1] == 1 and mask is None:
        state, y = _wkv_update(state, r[:, 0], w[:, 0], k[:, 0], v[:, 0], kappa[:, 0], a[:, 0])
        return state, y[:, None]

    def body(state, xs):
        *inputs, real = xs
        new, y = _wkv_update(state, *inputs)
        if mask is not None:
            new = jnp.where(real[:, None, None, None], new, state)
        return new, y

    time_major = [jnp.swapaxes(t, 0, 1) for t in (r, w, k, v, kappa, a)]
    real = jnp.ones(r.shape[:2], bool) if mask is None else mask
    state, y = jax.lax.scan(body, state, (*time_major, jnp.swapaxes(real, 0, 1)))
    return state, jnp.swapaxes(y, 0, 1)


def _block(x, v_first, layer, first, state, mask, c: RWKV7Config):
    """One block on ``x (B, T, C)`` float32. ``state``: this layer's ``(att_shift, wkv,
    ffn_shift)``; ``first``: whether this is layer 0 (sets ``v_first``)."""
    B, T, C = x.shape
    H, N, dt = c.num_heads, c.head_size, c.dtype
    vec = egg.nn.vector
    att_shift, wkv, ffn_shift = state

    h = layer_norm(x, layer["ln1_weight"], layer["ln1_bias"], c.layer_norm_eps)
    before, att_shift = _shift(h, att_shift, mask)
    delta = before - h
    xr, xw, xk, xv, xa, xg = (h + delta * vec(layer[f"x_{n}"]) for n in "rwkvag")
    r = _dense(xr, layer["receptance"], dt)
    k = _dense(xk, layer["key"], dt)
    v = _dense(xv, layer["value"], dt)
    w = _dense(jnp.tanh(_dense(xw, layer["w1"], dt)), layer["w2"], dt)
    w = jnp.exp(-_DECAY_SCALE * jax.nn.sigmoid(vec(layer["w0"]) + w))
    a = jax.nn.sigmoid(vec(layer["a0"]) + _dense(_dense(xa, layer["a1"], dt), layer["a2"], dt))
    g = _dense(jax.nn.sigmoid(_dense(xg, layer["g1"], dt)), layer["g2"], dt)
    v_mix = jax.nn.sigmoid(vec(layer["v0"]) + _dense(_dense(xv, layer["v1"], dt), layer["v2"], dt))
    v = jnp.where(first, v, v + (v_first - v) * v_mix)
    v_first = jnp.where(first, v, v_first)

    heads = lambda t: t.reshape(B, T, H, N)  # noqa: E731
    kappa = heads(k * vec(layer["k_k"]))
    kappa = kappa / jnp.maximum(jnp.linalg.norm(kappa, axis=-1, keepdims=True), 1e-12)
    k = k * (1 + (a - 1) * vec(layer["k_a"]))
    r, w, k, v, a = heads(r), heads(w), heads(k), heads(v), heads(a)
    wkv, y = _wkv(wkv, r, w, k, v, kappa, a, mask)

    mean = jnp.mean(y, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(y - mean), axis=-1, keepdims=True)
    y = ((y - mean) * jax.lax.rsqrt(var + c.group_norm_eps)).reshape(B, T, C)
    y = y * vec(layer["ln_x_weight"]) + vec(layer["ln_x_bias"])
    bonus = jnp.sum(r * k * vec(layer["r_k"]).reshape(H, N), axis=-1, keepdims=True) * v
    x = x + _dense((y + bonus.reshape(B, T, C)) * g, layer["output"], dt)

    h = layer_norm(x, layer["ln2_weight"], layer["ln2_bias"], c.layer_norm_eps)
    before, ffn_shift = _shift(h, ffn_shift, mask)
    hk = h + (before - h) * vec(layer["ffn_x_k"])
    hidden = jnp.square(jax.nn.relu(_dense(hk, layer["ffn_key"], dt)))
    x = x + _dense(hidden, layer["ffn_value"], dt)
    return x, v_first, (att_shift, wkv, ffn_shift)


def cast_params(params: Any, dtype: Any) -> Any:
    """Matrices (plain or views) in ``dtype``, vectors float32 (see
    :func:`eggroll.models.llm.cast_params`); a no-op for float32."""
    if jnp.dtype(dtype) == jnp.float32:
        return params

    def one(path, leaf):
        name = getattr(path[-1], "key", "")
        return llm.cast_params(leaf, dtype) if name in MATRIX_LEAVES else leaf

    return jax.tree_util.tree_map_with_path(one, params, is_leaf=lambda x: isinstance(x, LowRank))


def _run(params, c: RWKV7Config, tokens, mask, state: State, last_only: bool = False):
    B, T = tokens.shape
    params = cast_params(params, c.dtype)
    x = egg.nn.embed(tokens, params["embed"]).astype(jnp.float32)
    x = layer_norm(x, params["ln0_weight"], params["ln0_bias"], c.layer_norm_eps)
    first = jnp.arange(c.num_layers) == 0

    def body(carry, xs):
        x, v_first = carry
        layer, is_first, *layer_state = xs
        x, v_first, layer_state = _block(x, v_first, layer, is_first, layer_state, mask, c)
        return (x, v_first), layer_state

    xs = (params["layers"], first, state.att_shift, state.wkv, state.ffn_shift)
    (x, _), (att_shift, wkv, ffn_shift) = jax.lax.scan(body, (x, jnp.zeros_like(x)), xs)
    if last_only:  # the head of the last position only (a decoder needs no more)
        x = x[:, -1:]
    x = layer_norm(x, params["ln_out_weight"], params["ln_out_bias"], c.layer_norm_eps)
    logits = _dense(x, params["head"], c.dtype)
    return logits, State(att_shift, wkv, ffn_shift)


def forward(
    params: Any,
    config: RWKV7Config,
    tokens: Array,
    mask: Array | None = None,
    state: State | None = None,
) -> tuple[Array, State]:
    """Logits of a (left-padded) token batch, continuing ``state`` (``None``: a fresh one).

    ``tokens (B, T)`` int ids; ``mask (B, T)`` bool, True for real tokens, padding first in a
    row (``None``: all real). Padding leaves the state as it was, so a left-padded row ends in
    the state of its unpadded prompt. Returns ``(logits (B, T, V) float32, state)``; logits at
    padding positions are meaningless. Each layer computes its projections for all ``T``
    tokens at once and runs the WKV recurrence as a ``lax.scan`` over time.
    """
    B, T = tokens.shape
    state = init_state(config, B) if state is None else state
    mask = None if mask is None else jnp.asarray(mask).astype(bool)
    return _run(params, config, tokens, mask, state)


def step(params: Any, config: RWKV7Config, token: Array, state: State) -> tuple[Array, State]:
    """One token per sequence: ``token (B,)`` → ``(logits (B, V) float32, state)``; no scan
    over time (the decode step)."""
    params = cast_params(params, config.dtype)
    logits, layers = _step_layers(
        _split_layers(params), config, token, _split_state(state, config.num_layers)
    )
    return logits, State(*(jnp.stack(part) for part in zip(*layers, strict=True)))


# The decode loop keeps every layer's state (and parameters) as separate arrays. Stacked
# ``(L, ...)`` arrays scanned over layers cost a population more than the model: under a
# ``vmap`` over members the state is ``(members, L, ...)``, and ``lax.scan`` slices the layer
# axis only after moving it in front, a transposed copy of every member's whole state into
# and out of each step plus a fresh output buffer. Per-layer arrays are updated in place by
# the unrolled layers, and the per-layer parameter slices are made once per call, not per token.
def _split_layers(params: Any) -> list[Any]:
    """``params["layers"]`` as one pytree per layer (views sliced on their stacking axis)."""
    layers = params["layers"]
    count = jax.tree_util.tree_leaves(layers)[0].shape[0]
    is_view = lambda x: isinstance(x, LowRank)  # noqa: E731
    return [
        {**params, "layers": jax.tree_util.tree_map(lambda p, i=i: p[i], layers, is_leaf=is_view)}
        for i in range(count)
    ]


def _split_state(state: State, layers: int) -> list[tuple[Array, Array, Array]]:
    return [(state.att_shift[i], state.wkv[i], state.ffn_shift[i]) for i in range(layers)]


def _step_layers(per_layer, c: RWKV7Config, token, layer_states):
    """:func:`step` on :func:`_split_layers` parameters (cast) and per-layer states: the
    layers unrolled, no scan. Returns ``(logits (B, V), new per-layer states)``."""
    top = per_layer[0]
    x = egg.nn.embed(token[:, None], top["embed"]).astype(jnp.float32)
    x = layer_norm(x, top["ln0_weight"], top["ln0_bias"], c.layer_norm_eps)
    v_first, states = jnp.zeros_like(x), []
    for i, (params, layer_state) in enumerate(zip(per_layer, layer_states, strict=True)):
        x, v_first, layer_state = _block(x, v_first, params["layers"], i == 0, layer_state, None, c)
        states.append(tuple(layer_state))
    x = layer_norm(x, top["ln_out_weight"], top["ln_out_bias"], c.layer_norm_eps)
    return _dense(x[:, 0], top["head"], c.dtype), states


def prefill(params, config, tokens, mask=None, last_only=False) -> tuple[Array, State]:
    """``forward`` of a prompt batch from the zero state (what :func:`generate` starts with).
    ``last_only``: logits of the last position only, ``(B, 1, V)``."""
    B = tokens.shape[0]
    mask = None if mask is None else jnp.asarray(mask).astype(bool)
    return _run(params, config, tokens, mask, init_state(config, B), last_only)


# ------------------------------------------------------------------------------ generation
def generate(
    params: Any, config: RWKV7Config, prompt: Array, prompt_mask: Array | None, key: Array, *,
    max_new_tokens: int, temperature: float = 0.0, stop_tokens: Sequence[int] = (),
    pad_id: int = 0,
) -> Generation:  # fmt: skip
    """Continue ``prompt`` by up to ``max_new_tokens`` tokens: the same contract as
    :func:`eggroll.models.generate.generate` (greedy at temperature 0, ``fold_in(key, step)``
    draws, ``pad_id`` after a stop token, model log-probs), with a recurrent state of constant
    size instead of a KV cache. One prefill and one ``lax.while_loop`` of :func:`step`; vmap it
    over member views to decode a population, each member with its own state. ``key`` may be
    ``None`` when greedy. Not jitted itself."""
    generate_lib.check_decoding(max_new_tokens, temperature)
    params = cast_params(params, config.dtype)
    logits, state = prefill(params, config, prompt, prompt_mask, last_only=True)
    per_layer = _split_layers(params)

    def advance(last, layer_states):
        return _step_layers(per_layer, config, last, layer_states)

    return generate_lib.decode(
        logits[:, -1], _split_state(state, config.num_layers), advance, key,
        max_new_tokens=max_new_tokens, temperature=temperature, stop_tokens=stop_tokens,
        pad_id=pad_id,
    )  # fmt: skip


# ------------------------------------------------------------------------------ files
# Official tensor name → (our leaf, layer tensor?, kind). Kinds: "matrix" (stored as ours),
# "linear" (PyTorch Linear (out, in): transposed), "vector" ((1, 1, C), (H, N) or (C,)).
_TOP = {
    "emb.weight": ("embed", "matrix"),
    "blocks.0.ln0.weight": ("ln0_weight", "vector"),
    "blocks.0.ln0.bias": ("ln0_bias", "vector"),
    "ln_out.weight": ("ln_out_weight", "vector"),
    "ln_out.bias": ("ln_out_bias", "vector"),
    "head.weight": ("head", "linear"),
}
_LAYER = {
    **{f"{n}.{p}": (f"{n}_{p}", "vector") for n in ("ln1", "ln2") for p in ("weight", "bias")},
    **{f"att.ln_x.{p}": (f"ln_x_{p}", "vector") for p in ("weight", "bias")},
    **{f"att.{n}": (n, "vector") for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")},
    **{f"att.{n}": (n, "vector") for n in ("w0", "a0", "v0", "k_k", "k_a", "r_k")},
    **{f"att.{n}": (n, "matrix") for n in ("w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2")},
    **{f"att.{n}.weight": (n, "linear") for n in ("receptance", "key", "value", "output")},
    "ffn.x_k": ("ffn_x_k", "vector"),
    "ffn.key.weight": ("ffn_key", "linear"),
    "ffn.value.weight": ("ffn_value", "linear"),
}
# Layer 0 never uses its value-residual parameters; files may omit them.
_OPTIONAL = frozenset({"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"})


def expected_tensors(config: RWKV7Config) -> dict[str, tuple[str, int | None, str, tuple]]:
    """Official tensor name → ``(our leaf, layer or None, kind, file shape)`` (the shape of
    the official ``.pth``: vectors ``(1, 1, C)``, ``r_k (H, N)``, Linear weights ``(out,
    in)``)."""
    shapes = param_shapes(config)
    c = config

    def file_shape(leaf_shape, kind, leaf):
        if kind == "linear":
            return leaf_shape[::-1]
        if kind == "vector":
            if leaf == "r_k":
                return (c.num_heads, c.head_size)
            if leaf.startswith(("x_", "ffn_x")) or leaf in ("w0", "a0", "v0", "k_k", "k_a"):
                return (1, 1, c.hidden_size)
        return leaf_shape

    names = {}
    for name, (leaf, kind) in _TOP.items():
        names[name] = (leaf, None, kind, file_shape(shapes[leaf], kind, leaf))
    for i in range(c.num_layers):
        for suffix, (leaf, kind) in _LAYER.items():
            shape = file_shape(shapes["layers"][leaf][1:], kind, leaf)
            names[f"blocks.{i}.{suffix}"] = (leaf, i, kind, shape)
    return names


def config_to_json(config: RWKV7Config) -> dict[str, Any]:
    c = config
    return {
        "model_type": MODEL_TYPE,
        "version": VERSION,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "num_layers": c.num_layers,
        "head_size": c.head_size,
        "intermediate_size": c.intermediate_size,
        "decay_lora": c.decay_lora,
        "a_lora": c.a_lora,
        "v_lora": c.v_lora,
        "gate_lora": c.gate_lora,
        "layer_norm_eps": c.layer_norm_eps,
        "group_norm_eps": c.group_norm_eps,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": list(c.eos_token_id),
        "pad_token_id": c.pad_token_id,
    }


def config_from_json(data: dict[str, Any], compute_dtype: str = "float32") -> RWKV7Config:
    """A config from ``config.json``; :class:`~eggroll.models.hf.ModelFolderError` for another
    model type or an architecture version other than ``x070``."""
    if data.get("model_type") != MODEL_TYPE:
        raise ModelFolderError(
            f"not an RWKV-7 folder: model_type={data.get('model_type')!r} (expected "
            f"{MODEL_TYPE!r}); make one from a .pth with scripts/convert_rwkv7.py"
        )
    if data.get("version") != VERSION:
        raise ModelFolderError(
            f"unknown RWKV architecture version {data.get('version')!r}: eggroll implements "
            f"RWKV-7 only (version {VERSION!r})"
        )
    fields = {f.name for f in dataclasses.fields(RWKV7Config)} - {"compute_dtype"}
    missing = [k for k in ("vocab_size", "hidden_size", "num_layers", "head_size") if k not in data]
    if missing:
        raise ModelFolderError(f"config.json lacks {missing}")
    try:
        return RWKV7Config(
            **{k: v for k, v in data.items() if k in fields}, compute_dtype=compute_dtype
        )
    except (TypeError, ValueError) as err:
        raise ModelFolderError(f"config.json describes an unsupported model: {err}") from err


def is_model_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder/config.json`` says ``model_type: rwkv7``."""
    path = Path(folder) / CONFIG_FILE
    try:
        return json.loads(path.read_text("utf-8")).get("model_type") == MODEL_TYPE
    except (OSError, ValueError, AttributeError):
        return False


def load_config(folder: str | os.PathLike, compute_dtype: str = "float32") -> RWKV7Config:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no {CONFIG_FILE} in {folder}: convert an RWKV-7 .pth with scripts/convert_rwkv7.py"
        )
    try:
        data = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as err:
        raise ModelFolderError(f"{path} is not valid JSON: {err}") from err
    return config_from_json(data, compute_dtype)


def params_from_tensors(tensors: Any, config: RWKV7Config, source: str = "") -> dict[str, Any]:
    """Our float32 parameters from a mapping of official tensor names to arrays (anything
    ``np.asarray`` reads). :class:`~eggroll.models.hf.ModelFolderError` naming a missing
    tensor, an unknown one, or a wrong shape."""
    where = f" in {source}" if source else ""
    expected = expected_tensors(config)
    names = set(tensors.keys())
    missing = sorted(set(expected) - names - _OPTIONAL)
    if missing:
        raise ModelFolderError(
            f"{len(missing)} tensors missing{where}, e.g. {missing[:3]}: the checkpoint is "
            f"incomplete or does not match the config ({config.num_layers} layers)"
        )
    unknown = sorted(names - set(expected))
    if unknown:
        raise ModelFolderError(
            f"{len(unknown)} tensors{where} are not part of an RWKV-7 (x070) model as "
            f"configured, e.g. {unknown[:3]}: another version or variant (DeepEmbed?)"
        )
    shapes = param_shapes(config)
    out: dict[str, Any] = {k: np.zeros(v, np.float32) for k, v in shapes.items() if k != "layers"}
    out["layers"] = {k: np.zeros(v, np.float32) for k, v in shapes["layers"].items()}
    for name, (leaf, layer, kind, file_shape) in expected.items():
        if name not in names:
            continue  # optional, stays zero
        array = tensors[name]
        shape = tuple(array.shape)
        target = out[leaf] if layer is None else out["layers"][leaf]
        want = target.shape if layer is None else target.shape[1:]
        if shape not in (file_shape, want):
            raise ModelFolderError(
                f"tensor {name}{where} has shape {shape} but the config implies {file_shape}"
            )
        array = np.asarray(array, dtype=np.float32)
        array = array.T if kind == "linear" else array.reshape(want)
        if layer is None:
            target[...] = array
        else:
            target[layer] = array
    return jax.tree_util.tree_map(jnp.asarray, out)


def load_params(folder: str | os.PathLike, config: RWKV7Config) -> dict[str, Any]:
    """Float32 parameters of ``folder/model.safetensors`` (any float dtype on disk)."""
    from eggroll.models import hf
    from eggroll.models.tokenizer import require

    safetensors = require("safetensors")
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no {WEIGHTS_FILE} in {folder}: convert an RWKV-7 .pth with scripts/convert_rwkv7.py"
        )
    with ExitStack() as stack:
        handle = stack.enter_context(safetensors.safe_open(str(path), framework="np"))
        handles = {path: handle}

        class _Lazy:
            def keys(self):
                return list(handle.keys())

            def __getitem__(self, name):
                return _Tensor(name)

        class _Tensor:
            def __init__(self, name):
                self.name = name
                self.shape = tuple(handle.get_slice(name).get_shape())

            def __array__(self, dtype=None, copy=None):
                return hf._get(handles, path, self.name).astype(dtype or np.float32)

        return params_from_tensors(_Lazy(), config, str(path))


def load(
    folder: str | os.PathLike, compute_dtype: str = "float32"
) -> tuple[dict[str, Any], RWKV7Config]:
    """``(params, config)`` of an RWKV-7 model folder."""
    config = load_config(folder, compute_dtype)
    return load_params(folder, config), config


def to_tensors(params: Any, config: RWKV7Config) -> dict[str, np.ndarray]:
    """Our parameters (views materialised) as official-layout float32 tensors."""
    params = egg.materialize(params)
    tensors = {}
    for name, (leaf, layer, kind, file_shape) in expected_tensors(config).items():
        array = np.asarray(params[leaf] if layer is None else params["layers"][leaf][layer])
        array = array.T if kind == "linear" else array.reshape(file_shape)
        tensors[name] = np.ascontiguousarray(array, dtype=np.float32)
    return tensors


def save_folder(folder: str | os.PathLike, tensors: dict[str, Any], config: RWKV7Config) -> Path:
    """Write ``model.safetensors`` (the tensors as given: NumPy arrays, or torch tensors of any
    dtype) then ``config.json``, each atomically. Checks the tensors against the config."""
    from eggroll.models.tokenizer import require

    params_from_tensors(tensors, config)  # validation (names, shapes)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{WEIGHTS_FILE}.tmp"
    try:
        if any(type(t).__module__.startswith("torch") for t in tensors.values()):
            require("safetensors.torch").save_file(
                {k: t.contiguous() for k, t in tensors.items()}, str(tmp), {"format": "pt"}
            )
        else:
            require("safetensors.numpy").save_file(tensors, str(tmp), {"format": "pt"})
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / WEIGHTS_FILE)
    finally:
        if tmp.exists():
            tmp.unlink()
    write_atomic(
        folder / CONFIG_FILE, (json.dumps(config_to_json(config), indent=2) + "\n").encode()
    )
    return folder


def save(folder: str | os.PathLike, params: Any, config: RWKV7Config) -> Path:
    """Write a model folder :func:`load` reads (official tensor names, float32)."""
    return save_folder(folder, to_tensors(params, config), config)


def load_tokenizer(folder: str | os.PathLike, config: RWKV7Config):
    """The World tokenizer of ``folder`` (its vocabulary file, copied there by the
    converter), with the config's special ids."""
    from eggroll.models import rwkv_tokenizer

    return rwkv_tokenizer.load(folder, eos_ids=config.eos_token_id, pad_id=config.pad_token_id)
