"""Backprop language-model training for :mod:`eggroll.models.llm` (optax + ``jax.grad``).

The ES engine needs no gradients, but a model to fine-tune with ES has to come from
somewhere: this trains one (e.g. the tiny byte model on text, or on task-format text before a
reasoning fine-tune) and is reusable without the CLI::

    config = llm.tiny_byte_config()
    params = llm.init_params(jax.random.key(0), config)
    batches = byte_batches(corpus.train, batch_size=32, seq_len=128, seed=0)
    result = train_lm(params, config, batches, optax.adamw(3e-3), steps=300)

A batch is ``tokens (B, T+1)`` (inputs ``tokens[:, :-1]``, targets ``tokens[:, 1:]``) or a pair
``(tokens, loss_mask (B, T))`` whose mask picks the targets that count (e.g. only the answer of a
task example; right padding needs no attention mask under causal attention, only a zero loss
mask).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from eggroll.models import llm

Array = jax.Array
Batch = np.ndarray | Array | tuple[Any, Any]


def loss_fn(params: Any, config: llm.LLMConfig, tokens: Array, mask: Array | None = None) -> Array:
    """Mean next-token cross-entropy in nats over the targets ``tokens[:, 1:]`` where ``mask``
    (``(B, T)``, default all) is true; works on plain parameters and member views."""
    logits, _ = llm.forward(params, config, tokens[:, :-1])
    nll = -llm.token_logprobs(logits, tokens[:, 1:])
    weights = jnp.ones(nll.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)


@functools.lru_cache(maxsize=8)
def make_backprop_step(
    config: llm.LLMConfig, optimizer: optax.GradientTransformation
) -> Callable[..., tuple[Any, Any, Array]]:
    """A jitted ``step(params, opt_state, tokens, mask) -> (params, opt_state, loss)``.

    Gradients flow through the compute-dtype forward into the float32 parameters. Cached per
    ``(config, optimizer)``, so repeated :func:`train_lm` calls compile once."""

    def step(params, opt_state, tokens, mask):
        loss, grads = jax.value_and_grad(loss_fn)(params, config, tokens, mask)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step)


@dataclasses.dataclass
class TrainResult:
    """``params`` and ``opt_state`` after training; ``losses`` (steps,) float32 per step."""

    params: Any
    opt_state: Any
    losses: np.ndarray


def _as_batches(batches: Iterable[Batch] | np.ndarray) -> Iterator[Batch]:
    if isinstance(batches, (np.ndarray, jax.Array)):
        if batches.ndim == 2:  # one batch, every step
            return itertools.repeat(batches)
        if batches.ndim == 3:  # a stack of batches, cycled
            return itertools.cycle(list(batches))
        raise ValueError(f"a batch array must be (B, T+1) or (S, B, T+1), got {batches.shape}")
    return iter(batches)


def train_lm(
    params: Any,
    config: llm.LLMConfig,
    batches: Iterable[Batch] | np.ndarray,
    optimizer: optax.GradientTransformation,
    steps: int,
    *,
    opt_state: Any = None,
    callback: Callable[[int, Array], None] | None = None,
) -> TrainResult:
    """Train for ``steps`` batches.

    Args:
      batches: an iterable of batches (``tokens (B, T+1)`` or ``(tokens, loss_mask)``), an
        array ``(B, T+1)`` used every step, or ``(S, B, T+1)`` cycled.
      opt_state: continue from a previous result's optimiser state (default: fresh).
      callback: ``callback(step, loss)`` after every step (1-based; ``loss`` is a device
        scalar, so reading it synchronises: do that only every few steps).

    Raises ``ValueError`` when the iterable runs out before ``steps``.
    """
    if steps < 0:
        raise ValueError(f"steps must be ≥ 0, got {steps}")
    step_fn = make_backprop_step(config, optimizer)
    if opt_state is None:
        opt_state = optimizer.init(params)
    source = _as_batches(batches)
    losses = []
    for step in range(1, steps + 1):
        try:
            batch = next(source)
        except StopIteration:
            raise ValueError(f"batches ran out after {step - 1} of {steps} steps") from None
        tokens, mask = batch if isinstance(batch, tuple) else (batch, None)
        tokens = jnp.asarray(tokens, jnp.int32)
        if mask is None:
            mask = jnp.ones((tokens.shape[0], tokens.shape[1] - 1), bool)
        params, opt_state, loss = step_fn(params, opt_state, tokens, jnp.asarray(mask, bool))
        losses.append(loss)
        if callback is not None:
            callback(step, loss)
    return TrainResult(params, opt_state, np.asarray(jax.device_get(losses), np.float32))


def byte_window_batch(
    data: np.ndarray, batch_size: int, seq_len: int, rng: np.random.Generator
) -> np.ndarray:
    """One batch of random windows of a byte array: ``(batch_size, seq_len + 1)`` int32.

    ``data`` is a 1-D uint8 array (e.g. :attr:`eggroll.data.text.Corpus.train`); byte values
    are token ids of the byte-level tokenizer. Windows start uniformly at random (drawn from
    ``rng``) and may cross document boundaries."""
    data = np.asarray(data)
    if data.ndim != 1 or len(data) < seq_len + 1:
        raise ValueError(
            f"need a 1-D byte array longer than seq_len + 1 = {seq_len + 1}, got {data.shape}"
        )
    starts = rng.integers(0, len(data) - seq_len, size=batch_size)
    return np.asarray(data[starts[:, None] + np.arange(seq_len + 1)[None, :]], np.int32)


def byte_batches(
    data: np.ndarray, batch_size: int, seq_len: int, seed: int = 0
) -> Iterator[np.ndarray]:
    """Endless :func:`byte_window_batch` batches drawn with ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    while True:
        yield byte_window_batch(data, batch_size, seq_len, rng)


def evaluation_batches(
    data: np.ndarray, batch_size: int, seq_len: int, max_batches: int
) -> Iterator[np.ndarray]:
    """Deterministic non-overlapping windows from the start of ``data`` (up to
    ``max_batches`` batches of ``(batch_size, seq_len + 1)``), for validation losses."""
    data = np.asarray(data)
    n = min(max_batches * batch_size, (len(data) - 1) // seq_len)
    if n < 1:
        raise ValueError(f"{len(data)} bytes are too few for one window of {seq_len + 1}")
    offsets = np.arange(seq_len + 1)
    for lo in range(0, n, batch_size):
        starts = np.arange(lo, min(lo + batch_size, n)) * seq_len
        yield np.asarray(data[starts[:, None] + offsets[None, :]], np.int32)


@functools.partial(jax.jit, static_argnums=1)
def _summed_loss(params: Any, config: llm.LLMConfig, tokens: Array) -> Array:
    return loss_fn(params, config, tokens) * (tokens.shape[0] * (tokens.shape[1] - 1))


def evaluate_loss(params: Any, config: llm.LLMConfig, batches: Iterable[np.ndarray]) -> float:
    """Mean cross-entropy in nats per target over ``batches`` (each ``(B, T+1)``)."""
    total, count = 0.0, 0
    for tokens in batches:
        total += float(_summed_loss(params, config, jnp.asarray(tokens, jnp.int32)))
        count += tokens.shape[0] * (tokens.shape[1] - 1)
    if count == 0:
        raise ValueError("no batches to evaluate")
    return total / count


# ------------------------------------------------------------------------------ policy gradient
def sequence_logits(params: Any, config: Any, tokens: Array, mask: Array) -> Array:
    """Logits ``(B, T, V)`` of a left-padded batch for either model family: the Llama family
    (:func:`eggroll.models.llm.forward`, causal attention) or RWKV-7
    (:func:`eggroll.models.rwkv7.forward`, the recurrence over the whole sequence from the
    zero state; padding leaves the state unchanged). Differentiable in ``params``."""
    from eggroll.models import rwkv7

    if isinstance(config, rwkv7.RWKV7Config):
        logits, _ = rwkv7.forward(params, config, tokens, mask)
    else:
        logits, _ = llm.forward(params, config, tokens, mask)
    return logits


def completion_logprobs(
    params: Any, config: llm.LLMConfig, prompt: Array, prompt_mask: Array,
    completion: Array, lengths: Array, temperature: float = 1.0,
) -> tuple[Array, Array]:  # fmt: skip
    """``log p(completion tokens | prompt)`` under ``softmax(logits / temperature)``,
    differentiable (the policy a sampler at that temperature draws from). ``config`` is an
    :class:`~eggroll.models.llm.LLMConfig` or an :class:`~eggroll.models.rwkv7.RWKV7Config`.

    Args:
      prompt: ``(B, P)`` left-padded ids with ``prompt_mask (B, P)`` (as given to
        :func:`eggroll.models.generate.generate`).
      completion: ``(B, T)`` generated ids (padding after a stop token is ignored).
      lengths: ``(B,)`` tokens of each completion that count (the stop token included).

    Returns ``(logprobs (B, T) float32, valid (B, T) bool)``; ``logprobs`` is 0 where not valid.
    One forward pass over prompt + completion: the positions ``P − 1 … P + T − 2`` predict the
    completion.
    """
    B, P = prompt.shape
    T = completion.shape[1]
    tokens = jnp.concatenate([prompt, completion.astype(prompt.dtype)], axis=1)
    mask = jnp.concatenate([prompt_mask.astype(bool), jnp.ones((B, T), bool)], axis=1)
    logits = sequence_logits(params, config, tokens[:, :-1], mask[:, :-1])
    valid = jnp.arange(T)[None, :] < lengths[:, None]
    logprobs = llm.token_logprobs(logits[:, P - 1 :] / temperature, completion)
    return jnp.where(valid, logprobs, 0.0), valid


def policy_gradient_loss(
    params: Any,
    config: llm.LLMConfig,
    prompt: Array,
    prompt_mask: Array,
    completion: Array,
    lengths: Array,
    advantages: Array,
    temperature: float = 1.0,
) -> Array:
    """GRPO-style on-policy loss ``−Σ_b A_b Σ_t log p(y_bt) / (B · T)``, ``p`` the policy at
    the sampling ``temperature``.

    ``advantages (B,)`` are group-relative (e.g. :class:`eggroll.shaping.group_z_score` of the
    rewards of G samples per prompt). One gradient step per sampled batch makes the importance
    ratio 1, so PPO clipping is inactive and omitted; the constant normaliser ``B · T`` (not
    each answer's length) avoids favouring short wrong answers ("Dr. GRPO"). No KL term.
    """
    logprobs, _ = completion_logprobs(
        params, config, prompt, prompt_mask, completion, lengths, temperature
    )
    B, T = completion.shape
    return -jnp.sum(advantages[:, None].astype(jnp.float32) * logprobs) / (B * T)
