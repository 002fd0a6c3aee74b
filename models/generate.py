"""Batched generation with a KV cache: one prefill, then one compiled decode loop.

``generate(params, config, prompt, prompt_mask, key, max_new_tokens=...)`` takes plain
parameters or an EGGROLL member view, so the same call runs

* on the unperturbed model: ``generate(state.params, ...)``;
* for every member at once: ``es.evaluate(state, fitness, prompt, mask, key)`` with a fitness
  that calls ``generate(view, ...)``, or ``jax.vmap(lambda i: generate(es.member(state, i),
  ...))(members)``. Members share the prompt batch; under ``vmap`` the big ``x @ W`` products
  of all members and prompts are one GEMM and each member adds its low-rank correction.

The decode loop is a single ``lax.while_loop`` (no host round trip per token) that stops when
every row has produced a stop token or ``max_new_tokens`` tokens. With ``temperature=0`` the
choice is greedy; otherwise tokens are drawn from ``softmax(logits / temperature)`` with the
key ``fold_in(key, step)``, shared by every row and member (common random numbers across the
population; pass per-member keys with ``in_axes=0`` for independent draws).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import custom_batching

from eggroll.models import llm

Array = jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Generation:
    """The continuation of a batch of prompts.

    ``tokens``: ``(B, N)`` int32, ``pad_id`` after a row's stop token (the stop token itself is
    kept). ``logprobs``: ``(B, N)`` float32, ``log p(token)`` under the model's own
    distribution (temperature 1, whatever temperature sampled it), 0 after the stop.
    ``lengths``: ``(B,)`` int32, tokens produced including the stop token. ``stopped``:
    ``(B,)`` bool, whether the row ended with a stop token.
    """

    tokens: Array
    logprobs: Array
    lengths: Array
    stopped: Array


def _choose(logits: Array, key: Array, temperature: float) -> tuple[Array, Array]:
    """Next token ``(B,)`` and its log-probability under ``logits (B, V)``."""
    if temperature == 0:
        token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
        token = jax.random.categorical(key, logits / temperature, axis=-1).astype(jnp.int32)
    return token, llm.token_logprobs(logits, token)


def generate(
    params: Any,
    config: llm.LLMConfig,
    prompt: Array,
    prompt_mask: Array | None,
    key: Array,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    stop_tokens: Sequence[int] = (),
    pad_id: int = 0,
) -> Generation:
    """Continue ``prompt`` by up to ``max_new_tokens`` tokens.

    Args:
      params: plain parameters or a member view; cast once to ``config.compute_dtype``.
      prompt: ``(B, P)`` int token ids, left-padded (see
        :meth:`eggroll.models.tokenizer.Tokenizer.batch`).
      prompt_mask: ``(B, P)`` bool, True for real tokens (``None``: all real).
      key: a JAX key (used only when ``temperature > 0``).
      max_new_tokens: ``N`` ≥ 1 (static). The cache holds ``P + N`` slots.
      temperature: 0 for greedy, > 0 to sample (static).
      stop_tokens: ids that end a row (static), e.g. ``config.eos_token_id``.
      pad_id: written after a row's stop token.

    Not jitted itself: wrap it in ``jax.jit`` with the keyword arguments bound (e.g.
    ``functools.partial``), or call it inside a jitted fitness function.
    """
    check_decoding(max_new_tokens, temperature)
    B, P = prompt.shape
    prompt_mask = jnp.ones((B, P), bool) if prompt_mask is None else prompt_mask.astype(bool)
    params = llm.cast_params(params, config.dtype)
    logits, cache = llm.prefill(
        params, config, prompt, prompt_mask, P + max_new_tokens, last_only=True
    )

    def advance(last: Array, cache: Any) -> tuple[Array, Any]:
        logits, cache = llm.forward(params, config, last[:, None], None, cache)
        return logits[:, 0], cache

    return decode(
        logits[:, -1], cache, advance, key, max_new_tokens=max_new_tokens,
        temperature=temperature, stop_tokens=stop_tokens, pad_id=pad_id,
    )  # fmt: skip


@custom_batching.custom_vmap
def _all_rows(done: Array) -> Array:
    """``jnp.all(done)``, and under ``vmap`` (members) all of every batch's rows: the loop's
    condition stays one unbatched boolean. With a batched condition ``vmap`` of a
    ``while_loop`` selects every carried array (the decoding state of every member, each
    step) between its old and new value; here rows that are done already keep their outputs
    unchanged in :func:`decode`'s body, so running them on until every row is done gives the
    same result without that copy."""
    return jnp.all(done)


@_all_rows.def_vmap
def _all_rows_batched(axis_size, in_batched, done):
    return _all_rows(done), False


def check_decoding(max_new_tokens: Any, temperature: Any) -> None:
    """Refuse a length below 1 or a negative temperature (before anything is traced)."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer ≥ 1, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be ≥ 0 (0: greedy), got {temperature!r}")


def decode(
    first_logits: Array,
    state: Any,
    advance: Callable[[Array, Any], tuple[Array, Any]],
    key: Array | None,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    stop_tokens: Sequence[int] = (),
    pad_id: int = 0,
) -> Generation:
    """The decoding loop every model family shares: choose a token from ``first_logits (B,
    V)`` (the prompt's last position), then ``advance(last (B,), state) -> (logits (B, V),
    state)`` inside one ``lax.while_loop`` until ``max_new_tokens`` or every row stopped.
    ``state`` is the model's (a KV cache, a recurrent state); draws use ``fold_in(key, step)``
    (``key`` may be ``None`` when greedy)."""
    B = first_logits.shape[0]
    stops = jnp.asarray(tuple(stop_tokens), jnp.int32)

    def emit(carry, logits):
        """Choose the token of step ``carry['step']`` and write it."""
        step, done = carry["step"], carry["done"]
        step_key = jax.random.fold_in(key, step) if temperature > 0 else None
        token, logprob = _choose(logits, step_key, temperature)
        token = jnp.where(done, pad_id, token)
        logprob = jnp.where(done, 0.0, logprob)
        hit = jnp.isin(token, stops) & ~done if stops.size else jnp.zeros_like(done)
        return {
            **carry,
            "step": step + 1,
            "last": token,
            "tokens": jax.lax.dynamic_update_index_in_dim(carry["tokens"], token, step, 1),
            "logprobs": jax.lax.dynamic_update_index_in_dim(carry["logprobs"], logprob, step, 1),
            "lengths": carry["lengths"] + (~done).astype(jnp.int32),
            "stopped": carry["stopped"] | hit,
            "done": done | hit,
        }

    carry = {
        "step": jnp.zeros((), jnp.int32),
        "last": jnp.zeros((B,), jnp.int32),
        "tokens": jnp.full((B, max_new_tokens), pad_id, jnp.int32),
        "logprobs": jnp.zeros((B, max_new_tokens), jnp.float32),
        "lengths": jnp.zeros((B,), jnp.int32),
        "stopped": jnp.zeros((B,), bool),
        "done": jnp.zeros((B,), bool),
        "state": state,
    }
    carry = emit(carry, first_logits)

    def cond(carry):
        return (carry["step"] < max_new_tokens) & ~_all_rows(carry["done"])

    def body(carry):
        logits, state = advance(carry["last"], carry["state"])
        return emit({**carry, "state": state}, logits)

    carry = jax.lax.while_loop(cond, body, carry)
    return Generation(carry["tokens"], carry["logprobs"], carry["lengths"], carry["stopped"])
