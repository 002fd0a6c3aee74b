"""Llama/Qwen2/Mistral-style decoder written with eggroll.nn ops.

Every matrix goes through :func:`eggroll.nn.dense` / :func:`eggroll.nn.embed`, so the same
code runs on plain parameters and on EGGROLL member views: under ``jax.vmap`` over members
``x @ W`` is one GEMM shared by the population and each member adds its rank-r correction;
per-member weights are never built.

One block (pre-norm, residual)::

    h = rms_norm(x, attn_norm)
    q, k, v = h @ wq (+ bq), h @ wk (+ bk), h @ wv (+ bv)      # grouped-query heads
    q, k = rope(q, positions), rope(k, positions)             # rotate-half convention
    x = x + softmax(q kᵀ / √head_dim + causal/padding mask) v @ wo (+ bo)
    h = rms_norm(x, mlp_norm)
    x = x + (silu(h @ w_gate) * (h @ w_up)) @ w_down
    logits = rms_norm(x, final_norm) @ lm_head              # or @ embedᵀ when tied

Parameters (float32 master weights; layers stacked on a leading axis ``L`` and run with
``lax.scan``; our matrices are ``(in, out)``, the transpose of Hugging Face's Linear)::

    embed (V, D); final_norm (D,); lm_head (D, V) unless tied
    layers/attn_norm (L, D); layers/mlp_norm (L, D)
    layers/wq (L, D, H·hd); layers/wk, layers/wv (L, D, K·hd); layers/wo (L, H·hd, D)
    layers/bq (L, H·hd), layers/bk, layers/bv (L, K·hd)   when qkv_bias (Qwen2)
    layers/bo (L, D)                                       when o_bias (Llama attention_bias)
    layers/w_gate, layers/w_up (L, D, F); layers/w_down (L, F, D)

Computation runs in ``config.compute_dtype`` (e.g. bfloat16 activations and matmuls) while
the parameters stay float32: a bfloat16 weight would round away the small ES updates.
Normalisation statistics, rotary angles, attention scores and softmax, and the logits are
float32.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

import eggroll as egg
from eggroll.nn import LowRank

Array = jax.Array

MODEL_TYPES = ("llama", "qwen2", "mistral")
ROPE_TYPES = ("default", "linear", "llama3")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
MATRIX_LEAVES = frozenset({"embed", "lm_head", "wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"})
_MASKED = -1e30  # attention score of a masked key (finite: a row with no valid key stays NaN-free)


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    """Shape and numerics of a decoder (hashable: pass it as a static argument to ``jit``).

    ``head_dim`` defaults to ``hidden_size // num_heads``. ``rope_scaling`` is ``None`` or a
    mapping with ``rope_type`` in :data:`ROPE_TYPES` (``linear``: ``factor``; ``llama3``:
    ``factor``, ``low_freq_factor``, ``high_freq_factor``, ``original_max_position_embeddings``);
    it is stored as a sorted tuple of items. ``sliding_window``: keys further back than this many
    positions are masked (Mistral), ``None`` for full causal attention. ``eos_token_id`` is a
    tuple (Hugging Face allows several).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None
    rope_theta: float = 10000.0
    rope_scaling: Any = None
    rms_norm_eps: float = 1e-6
    tie_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    sliding_window: int | None = None
    max_position_embeddings: int = 2048
    model_type: str = "llama"
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = ()
    pad_token_id: int | None = None
    compute_dtype: str = "float32"

    def __post_init__(self):
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LLMConfig.{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads="
                f"{self.num_kv_heads}: grouped-query attention shares each key/value head "
                "among an equal number of query heads"
            )
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ValueError(
                    f"hidden_size={self.hidden_size} is not divisible by num_heads="
                    f"{self.num_heads}; set head_dim explicitly"
                )
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if not isinstance(self.head_dim, int) or self.head_dim < 2 or self.head_dim % 2:
            raise ValueError(
                f"head_dim must be an even integer ≥ 2 (rotary pairs), got {self.head_dim!r}"
            )
        if not self.rope_theta > 0 or not self.rms_norm_eps > 0:
            raise ValueError("rope_theta and rms_norm_eps must be positive")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if self.model_type == "qwen2" and (not self.qkv_bias or self.o_bias):
            raise ValueError("a qwen2 model has q/k/v biases and no output bias")
        if self.model_type != "qwen2" and self.qkv_bias != self.o_bias:
            raise ValueError(
                f"{self.model_type}'s attention_bias adds biases to q, k, v and o together: "
                "set qkv_bias and o_bias alike, or use model_type='qwen2' for q/k/v biases only"
            )
        if self.sliding_window is not None and (
            not isinstance(self.sliding_window, int) or self.sliding_window < 1
        ):
            raise ValueError(f"sliding_window must be None or ≥ 1, got {self.sliding_window!r}")
        check_dtype_and_eos(self)
        object.__setattr__(self, "rope_scaling", _normalise_rope_scaling(self.rope_scaling))

    @property
    def dtype(self) -> jnp.dtype:
        """The compute dtype as a JAX dtype."""
        return jnp.dtype(self.compute_dtype)

    @property
    def group_size(self) -> int:
        """Query heads per key/value head."""
        return self.num_heads // self.num_kv_heads

    def replace(self, **changes: Any) -> LLMConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def check_dtype_and_eos(config: Any, dtypes: tuple[str, ...] = COMPUTE_DTYPES) -> None:
    """Shared by the model configs: refuse a ``compute_dtype`` not in ``dtypes`` and store
    ``eos_token_id`` as a tuple (an int, a list or ``None`` from a config file)."""
    if config.compute_dtype not in dtypes:
        raise ValueError(f"compute_dtype must be one of {dtypes}, got {config.compute_dtype!r}")
    eos = config.eos_token_id
    eos = () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)
    object.__setattr__(config, "eos_token_id", eos)


def _normalise_rope_scaling(scaling: Any) -> tuple | None:
    if scaling is None:
        return None
    items = dict(scaling)
    kind = items.get("rope_type", items.get("type", "default"))
    items.pop("type", None)
    items["rope_type"] = kind
    if kind not in ROPE_TYPES:
        raise ValueError(
            f"rope scaling {kind!r} is not supported; supported: {ROPE_TYPES}. Convert the "
            "model to one of them or extend eggroll.models.llm.rope_frequencies"
        )
    if items.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError("partial rotary embeddings (partial_rotary_factor < 1) are not supported")
    needed = {
        "linear": ("factor",),
        "llama3": (
            "factor",
            "low_freq_factor",
            "high_freq_factor",
            "original_max_position_embeddings",
        ),
    }
    missing = [k for k in needed.get(kind, ()) if k not in items]
    if missing:
        raise ValueError(f"rope scaling {kind!r} needs {missing}")
    if kind == "default":
        return None
    return tuple(sorted(items.items()))


def tiny_byte_config(**changes: Any) -> LLMConfig:
    """The tiny byte-level model that trains from scratch on a CPU.

    Vocabulary: bytes 0–255 plus the specials of
    :func:`eggroll.models.tokenizer.byte_level` (``<|bos|>`` 256, ``<|eos|>`` 257,
    ``<|pad|>`` 258), padded to 264. Width 128, 4 layers, 4 query / 2 key-value heads of 32,
    SwiGLU 384, tied embeddings, no biases (a ``llama`` checkpoint); about 0.8 M parameters.
    """
    from eggroll.models.tokenizer import BYTE_BOS, BYTE_EOS, BYTE_PAD, BYTE_VOCAB_SIZE

    fields = dict(
        vocab_size=BYTE_VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=384,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        tie_embeddings=True,
        max_position_embeddings=1024,
        model_type="llama",
        bos_token_id=BYTE_BOS,
        eos_token_id=(BYTE_EOS,),
        pad_token_id=BYTE_PAD,
    )
    fields.update(changes)
    return LLMConfig(**fields)


def qwen2_5_0_5b_config(**changes: Any) -> LLMConfig:
    """The Qwen2.5-0.5B shape (for benchmarks with random weights; no checkpoint is read).

    Width 896, 24 layers, 14 query / 2 key-value heads of 64, SwiGLU 4,864, vocabulary
    151,936, tied embeddings, q/k/v biases, rope θ = 10^6: 494 M parameters (136 M of them the
    embedding). ``changes`` override fields, e.g. ``compute_dtype="bfloat16"`` or
    ``num_layers=2``.
    """
    fields = dict(
        vocab_size=151_936,
        hidden_size=896,
        intermediate_size=4864,
        num_layers=24,
        num_heads=14,
        num_kv_heads=2,
        rope_theta=1_000_000.0,
        tie_embeddings=True,
        qkv_bias=True,
        max_position_embeddings=32_768,
        model_type="qwen2",
    )
    fields.update(changes)
    return LLMConfig(**fields)


# ------------------------------------------------------------------------------ parameters
def param_shapes(config: LLMConfig) -> dict[str, Any]:
    """The shape of every parameter leaf (a pytree of tuples, in the layout of the module doc)."""
    c = config
    L, D, F = c.num_layers, c.hidden_size, c.intermediate_size
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    layers = {
        "attn_norm": (L, D),
        "wq": (L, D, q),
        "wk": (L, D, kv),
        "wv": (L, D, kv),
        "wo": (L, q, D),
        "mlp_norm": (L, D),
        "w_gate": (L, D, F),
        "w_up": (L, D, F),
        "w_down": (L, F, D),
    }
    if c.qkv_bias:
        layers.update(bq=(L, q), bk=(L, kv), bv=(L, kv))
    if c.o_bias:
        layers["bo"] = (L, D)
    shapes: dict[str, Any] = {"embed": (c.vocab_size, D), "final_norm": (D,), "layers": layers}
    if not c.tie_embeddings:
        shapes["lm_head"] = (D, c.vocab_size)
    return shapes


def init_by_name(key: Array, shapes: Any, init: Any) -> Any:
    """A pytree of ``shapes`` (tuples) with each leaf ``init(name, shape, key)``: ``name`` is
    the leaf's last path key, and every leaf gets its own split of ``key``."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(
        shapes, is_leaf=lambda s: isinstance(s, tuple)
    )
    keys = jax.random.split(key, len(flat))
    leaves = [
        init(getattr(path[-1], "key", ""), shape, k)
        for (path, shape), k in zip(flat, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def init_params(key: Array, config: LLMConfig, std: float = 0.02) -> dict[str, Any]:
    """Random float32 parameters: matrices ``N(0, std²)`` (Hugging Face's
    ``initializer_range``), norm weights 1, biases 0."""

    def init(name: str, shape: tuple[int, ...], k: Array) -> Array:
        if name in MATRIX_LEAVES:
            return std * jax.random.normal(k, shape, jnp.float32)
        return (jnp.ones if name.endswith("norm") else jnp.zeros)(shape, jnp.float32)

    return init_by_name(key, param_shapes(config), init)


def leaf_rule(path: str, leaf: Any) -> str:
    """EGGROLL leaf rule for these parameters: the matrices (embeddings, projections, head)
    get low-rank noise; norm weights and biases, stacked ``(L, D)`` or not, get full-rank noise.

    Pass it as ``egg.EGGROLL(..., leaf_rule=llm.leaf_rule)``: the default rule would treat a
    stacked ``(L, D)`` norm as an ``L × D`` matrix.
    """
    return "lowrank" if path.rsplit("/", 1)[-1] in MATRIX_LEAVES else "full"


def count_params(params: Any) -> int:
    """Number of scalars in a parameter pytree (member views count their base)."""
    leaves = jax.tree_util.tree_leaves(params, is_leaf=lambda x: isinstance(x, LowRank))
    return sum(math.prod(leaf.shape) for leaf in leaves)


def cast_params(params: Any, dtype: Any) -> Any:
    """Parameters (or a member view) with every floating leaf in ``dtype``; a ``LowRank``
    keeps its float32 factors and scale (they are cast per use) and casts its shared base.

    Called once before a decode loop so the loop does not re-read the float32 weights; the
    forward pass calls it too (a no-op when the dtype already matches)."""
    dtype = jnp.dtype(dtype)

    def one(leaf):
        if isinstance(leaf, LowRank):
            return dataclasses.replace(leaf, base=leaf.base.astype(dtype))
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.astype(dtype)
        return leaf

    return jax.tree_util.tree_map(one, params, is_leaf=lambda x: isinstance(x, LowRank))


def _transpose(w: Array | LowRank) -> Array | LowRank:
    """``wᵀ`` of a matrix or a member view (``(W + s a bᵀ)ᵀ = Wᵀ + s b aᵀ``): the tied head."""
    if isinstance(w, LowRank):
        return LowRank(jnp.swapaxes(w.base, -1, -2), w.b, w.a, w.scale)
    return jnp.swapaxes(w, -1, -2)


# ------------------------------------------------------------------------------ KV cache
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys and values of every layer for ``S`` preallocated slots.

    ``k``, ``v``: ``(L, B, K, S, hd)`` in the compute dtype (head-major, see ``_attention``).
    ``valid``: ``(B, S)`` bool, the slots holding a real (non-padding) token. ``positions``:
    ``(B,)`` int32, the rotary position the row's next real token gets. ``length``: int32
    scalar, slots written so far (the same for every row: prompts are left-padded to one
    length).
    """

    k: Array
    v: Array
    valid: Array
    positions: Array
    length: Array

    @property
    def max_len(self) -> int:
        return self.k.shape[3]


def init_cache(config: LLMConfig, batch: int, max_len: int) -> KVCache:
    """An empty cache of ``max_len`` slots for ``batch`` rows (prompt + new tokens)."""
    shape = (config.num_layers, batch, config.num_kv_heads, max_len, config.head_dim)
    return KVCache(
        k=jnp.zeros(shape, config.dtype),
        v=jnp.zeros(shape, config.dtype),
        valid=jnp.zeros((batch, max_len), bool),
        positions=jnp.zeros((batch,), jnp.int32),
        length=jnp.zeros((), jnp.int32),
    )


# ------------------------------------------------------------------------------ pieces
def rms_norm(x: Array, weight: Array, eps: float) -> Array:
    """``weight · x / √(mean(x²) + eps)`` over the last axis; statistics in float32."""
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + eps)
    return egg.nn.vector(weight).astype(x.dtype) * xf.astype(x.dtype)


def rope_frequencies(config: LLMConfig) -> Array:
    """Inverse frequencies ``(head_dim / 2,)`` float32, with linear or Llama-3 scaling."""
    dim = config.head_dim
    inv = 1.0 / (config.rope_theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    if config.rope_scaling is None:
        return inv
    s = dict(config.rope_scaling)
    factor = float(s["factor"])
    if s["rope_type"] == "linear":
        return inv / factor
    # llama3: long wavelengths slowed by `factor`, short ones kept, a smooth blend between.
    low, high = float(s["low_freq_factor"]), float(s["high_freq_factor"])
    context = float(s["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv
    scaled = jnp.where(wavelen > context / low, inv / factor, inv)
    smooth = (context / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= context / high) & (wavelen <= context / low)
    return jnp.where(medium, blended, scaled)


def rope_angles(positions: Array, config: LLMConfig) -> tuple[Array, Array]:
    """``cos, sin`` of shape ``(*positions.shape, head_dim)`` float32 (halves repeated)."""
    freqs = positions.astype(jnp.float32)[..., None] * rope_frequencies(config)
    freqs = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(freqs), jnp.sin(freqs)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotate ``x (B, T, heads, hd)`` by angles ``(B, T, hd)`` (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


def _linear(x: Array, w: Any, b: Any = None) -> Array:
    y = egg.nn.dense(x, w).astype(x.dtype)
    if b is not None:
        y = y + egg.nn.vector(b).astype(x.dtype)
    return y


def _attention(q: Array, parts: list[tuple[Array, Array, Array]], config: LLMConfig) -> Array:
    """Softmax attention of ``q (B, T, H, hd)`` over one or more key/value ``parts``, each
    ``(keys (B, K, S_i, hd), values (B, K, S_i, hd), allowed (B, T, S_i) bool)``; the softmax
    runs over all parts together. Returns ``(B, T, H·hd)``; query head ``h`` reads key/value
    head ``h // group_size``.

    Decoding passes two parts: the cache as it was (read, never copied) and this call's new
    keys. Keys are head-major (``K`` before ``S``) so each product is a plain batched GEMM
    over ``(B, K)``; with a ``(B, S, K, hd)`` cache XLA transposed the whole cache every step.
    """
    B, T = q.shape[:2]
    K, G, hd = config.num_kv_heads, config.group_size, config.head_dim
    q = q.reshape(B, T, K, G, hd).transpose(0, 2, 3, 1, 4).reshape(B, K, G * T, hd)
    scores = []
    for keys, _, allowed in parts:
        s = jnp.einsum("bkqd,bksd->bkqs", q, keys, preferred_element_type=jnp.float32)
        s = s.reshape(B, K, G, T, -1) / math.sqrt(hd)
        scores.append(jnp.where(allowed[:, None, None], s, _MASKED))
    probs = jax.nn.softmax(jnp.concatenate(scores, axis=-1), axis=-1)
    out, offset = 0.0, 0
    for keys, values, _ in parts:
        p = probs[..., offset : offset + keys.shape[2]].astype(values.dtype)
        out = out + jnp.einsum("bkqs,bksd->bkqd", p.reshape(B, K, G * T, -1), values)
        offset += keys.shape[2]
    return out.reshape(B, K, G, T, hd).transpose(0, 3, 1, 2, 4).reshape(B, T, K * G * hd)


def _block(x, layer, cos, sin, new_allowed, old, config):
    """One decoder block on ``x (B, T, D)``. ``old``: ``None`` or ``(keys, values, allowed)``
    of this layer's cache before this call. Returns ``(x, (k, v))`` with this call's keys and
    values ``(B, K, T, hd)`` for the caller to write into the cache."""
    c = config
    B, T, _ = x.shape
    h = rms_norm(x, layer["attn_norm"], c.rms_norm_eps)
    q = _linear(h, layer["wq"], layer.get("bq")).reshape(B, T, c.num_heads, c.head_dim)
    k = _linear(h, layer["wk"], layer.get("bk")).reshape(B, T, c.num_kv_heads, c.head_dim)
    v = _linear(h, layer["wv"], layer.get("bv")).reshape(B, T, c.num_kv_heads, c.head_dim)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # (B, K, T, hd)
    parts = [(k, v, new_allowed)] if old is None else [old, (k, v, new_allowed)]
    x = x + _linear(_attention(q, parts, c), layer["wo"], layer.get("bo"))
    h = rms_norm(x, layer["mlp_norm"], c.rms_norm_eps)
    gate = jax.nn.silu(_linear(h, layer["w_gate"]))
    x = x + _linear(gate * _linear(h, layer["w_up"]), layer["w_down"])
    return x, (k, v)


# ------------------------------------------------------------------------------ forward
def _decode_layers(params, c, tokens, mask, start, index, old, last_only=False):
    """Embedding, blocks and head. ``start (B,)``: rotary position of each row's first real
    token; ``index``: the slot of ``tokens[:, 0]``; ``old``: ``None`` or
    ``(k, v (L, B, K, S, hd), valid (B, S))`` of the cache before this call. Returns
    ``(logits (B, T, V) float32, k_new, v_new (L, B, K, T, hd))``; with ``last_only`` the
    logits of the last position only, ``(B, 1, V)`` (the head is the largest matrix of a
    small model with a big vocabulary: a prompt's other positions would cost ``T - 1`` times
    its work and ``(T - 1)·V`` floats per row)."""
    T = tokens.shape[1]
    params = cast_params(params, c.dtype)
    positions = jnp.maximum(start[:, None] + jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1, 0)
    cos, sin = rope_angles(positions, c)
    q_slots = index + jnp.arange(T)

    def allowed(k_slots, key_valid):  # (B, T, S): causal, real keys, inside the window
        ok = (k_slots[None, :] <= q_slots[:, None])[None] & key_valid[:, None, :]
        if c.sliding_window is not None:
            ok &= (q_slots[:, None] - k_slots[None, :] < c.sliding_window)[None]
        return ok

    new_allowed = allowed(q_slots, mask)
    x = egg.nn.embed(tokens, params["embed"]).astype(c.dtype)
    if old is None:

        def body(x, layer):
            return _block(x, layer, cos, sin, new_allowed, None, c)

        x, (k_new, v_new) = jax.lax.scan(body, x, params["layers"])
    else:
        k_cache, v_cache, valid = old
        old_allowed = allowed(jnp.arange(k_cache.shape[3]), valid)

        def body(x, xs):
            layer, k_old, v_old = xs
            return _block(x, layer, cos, sin, new_allowed, (k_old, v_old, old_allowed), c)

        x, (k_new, v_new) = jax.lax.scan(body, x, (params["layers"], k_cache, v_cache))
    if last_only:
        x = x[:, -1:]
    x = rms_norm(x, params["final_norm"], c.rms_norm_eps)
    head = _transpose(params["embed"]) if c.tie_embeddings else params["lm_head"]
    return egg.nn.dense(x, head).astype(jnp.float32), k_new, v_new


def forward(
    params: Any,
    config: LLMConfig,
    tokens: Array,
    mask: Array | None = None,
    cache: KVCache | None = None,
) -> tuple[Array, KVCache | None]:
    """Logits of a (left-padded) token batch, optionally appending to a KV cache.

    Args:
      params: plain parameters or an EGGROLL member view (float32 or already cast).
      tokens: ``(B, T)`` int token ids.
      mask: ``(B, T)`` bool, True for real tokens; padding must come first in a row (left
        padding). Default: all real.
      cache: ``None`` (attend within ``tokens``) or a :class:`KVCache` whose next ``T`` slots
        receive these tokens (``cache.length + T <= cache.max_len``, not checked when traced).

    Returns ``(logits (B, T, V) float32, cache)`` (the updated cache, or ``None``). Rotary
    positions count real tokens only, so a left-padded row gets the same positions as the
    unpadded prompt. Logits at padding positions are meaningless.

    With a cache, each layer attends to the cache as it was plus this call's keys, and the
    new keys/values of all layers are written after the layer scan in one
    ``dynamic_update_slice`` (in place inside a decode loop); writing inside the scan made XLA
    copy the cache per layer. Start a cache with :func:`prefill`.
    """
    B, T = tokens.shape
    mask = jnp.ones((B, T), bool) if mask is None else mask.astype(bool)
    if cache is None:
        zero = jnp.zeros((), jnp.int32)
        logits, _, _ = _decode_layers(params, config, tokens, mask, zero[None], zero, None)
        return logits, None
    index = cache.length
    old = (cache.k, cache.v, cache.valid)
    logits, k_new, v_new = _decode_layers(params, config, tokens, mask, cache.positions, index, old)
    write = (0, 0, 0, index, 0)
    return logits, KVCache(
        k=jax.lax.dynamic_update_slice(cache.k, k_new.astype(cache.k.dtype), write),
        v=jax.lax.dynamic_update_slice(cache.v, v_new.astype(cache.v.dtype), write),
        valid=jax.lax.dynamic_update_slice(cache.valid, mask, (0, index)),
        positions=cache.positions + jnp.sum(mask, axis=1, dtype=jnp.int32),
        length=index + T,
    )


def prefill(
    params: Any,
    config: LLMConfig,
    tokens: Array,
    mask: Array | None,
    max_len: int,
    last_only: bool = False,
) -> tuple[Array, KVCache]:
    """``forward`` of a prompt batch into a fresh cache of ``max_len ≥ T`` slots.

    The same as ``forward(..., cache=init_cache(config, B, max_len))`` but attends only within
    the prompt (an empty cache has nothing to attend to, and XLA would constant-fold it).
    ``last_only``: return the logits of the last position only, ``(B, 1, V)`` (all a decoder
    needs from a left-padded prompt).
    """
    B, T = tokens.shape
    if max_len < T:
        raise ValueError(f"max_len={max_len} is shorter than the prompt ({T} tokens)")
    mask = jnp.ones((B, T), bool) if mask is None else mask.astype(bool)
    zero = jnp.zeros((), jnp.int32)
    logits, k_new, v_new = _decode_layers(
        params, config, tokens, mask, zero[None], zero, None, last_only
    )
    cache = init_cache(config, B, max_len)
    write = (0, 0, 0, 0, 0)
    return logits, KVCache(
        k=jax.lax.dynamic_update_slice(cache.k, k_new.astype(cache.k.dtype), write),
        v=jax.lax.dynamic_update_slice(cache.v, v_new.astype(cache.v.dtype), write),
        valid=jax.lax.dynamic_update_slice(cache.valid, mask, (0, 0)),
        positions=jnp.sum(mask, axis=1, dtype=jnp.int32),
        length=jnp.asarray(T, jnp.int32),
    )


def token_logprobs(logits: Array, targets: Array) -> Array:
    """``log p(targets)`` under ``logits (..., V)``: shape ``targets.shape``, float32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
