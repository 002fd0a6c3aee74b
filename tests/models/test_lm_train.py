"""Backprop pretraining of the byte-level model: the loss falls, masks and batch sources; the
policy-gradient (GRPO) loss."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from eggroll.models import llm, lm_train

CONFIG = llm.tiny_byte_config(hidden_size=32, intermediate_size=64, num_layers=2)
TEXT = np.frombuffer(
    b"".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n".encode() for i in range(300)),
    np.uint8,
)


def test_pretraining_lowers_the_loss_in_a_few_dozen_steps():
    params = llm.init_params(jax.random.key(0), CONFIG)
    train, valid = TEXT[: len(TEXT) * 9 // 10], TEXT[len(TEXT) * 9 // 10 :]
    evaluate = lambda p: lm_train.evaluate_loss(  # noqa: E731
        p, CONFIG, lm_train.evaluation_batches(valid, 8, 32, 4)
    )
    before = evaluate(params)
    assert abs(before - np.log(CONFIG.vocab_size)) < 0.1  # a random model is near uniform
    seen = []
    result = lm_train.train_lm(
        params,
        CONFIG,
        lm_train.byte_batches(train, batch_size=8, seq_len=32, seed=0),
        optax.adam(1e-2),
        steps=40,
        callback=lambda step, loss: seen.append(step),
    )
    assert seen == list(range(1, 41)) and result.losses.shape == (40,)
    assert result.losses[-5:].mean() < result.losses[0] - 2.0, result.losses
    assert evaluate(result.params) < before - 2.0  # held-out text, not memorised windows
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(result.params))


def test_loss_mask_selects_targets():
    params = llm.init_params(jax.random.key(1), CONFIG)
    tokens = jnp.asarray(TEXT[:34].reshape(2, 17), jnp.int32)
    mask = np.zeros((2, 16), bool)
    mask[0, 3] = mask[1, 10] = True

    @jax.jit
    def both(params):
        logits, _ = llm.forward(params, CONFIG, tokens[:, :-1])
        logp = llm.token_logprobs(logits, tokens[:, 1:])
        return lm_train.loss_fn(params, CONFIG, tokens, mask), -(logp[0, 3] + logp[1, 10]) / 2

    got, expected = both(params)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_batch_sources():
    batch = next(lm_train.byte_batches(TEXT, 3, 5, seed=0))
    assert batch.shape == (3, 6) and batch.dtype == np.int32
    starts = [TEXT.tobytes().find(row.astype(np.uint8).tobytes()) for row in batch]
    assert all(s >= 0 for s in starts)  # every window is a contiguous slice of the data
    windows = list(lm_train.evaluation_batches(TEXT[:100], 4, 10, 2))
    assert [w.shape for w in windows] == [(4, 11), (4, 11)]
    np.testing.assert_array_equal(windows[1][0], TEXT[40:51])
    params = llm.init_params(jax.random.key(2), CONFIG)
    with pytest.raises(ValueError, match="batches ran out after 0 of 2 steps"):
        lm_train.train_lm(params, CONFIG, [], optax.sgd(0.1), steps=2)
    with pytest.raises(ValueError, match=r"must be \(B, T\+1\)"):
        lm_train.train_lm(params, CONFIG, np.zeros(5, np.int32), optax.sgd(0.1), steps=1)
    with pytest.raises(ValueError, match="longer than seq_len"):
        next(lm_train.byte_batches(TEXT[:4], 2, 8))


def test_completion_logprobs_match_the_sampler_and_a_policy_step_moves_them():
    from eggroll.models import generate
    from eggroll.models.tokenizer import left_pad

    params = llm.init_params(jax.random.key(2), CONFIG)
    prompt, mask = left_pad([[256, 49, 43, 50, 61], [256, 55, 61]], pad_id=258)
    out = jax.jit(
        functools.partial(
            generate.generate, config=CONFIG, max_new_tokens=5, temperature=1.0,
            stop_tokens=(257,), pad_id=258,
        )
    )(params, prompt=prompt, prompt_mask=mask, key=jax.random.key(3))  # fmt: skip
    advantages = jnp.array([1.0, -1.0])

    @jax.jit
    def policy_step(params):
        args = (prompt, mask, out.tokens, out.lengths)
        before, valid = lm_train.completion_logprobs(params, CONFIG, *args)
        loss, grads = jax.value_and_grad(lm_train.policy_gradient_loss)(
            params, CONFIG, *args, advantages
        )
        stepped = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, grads)
        after, _ = lm_train.completion_logprobs(stepped, CONFIG, *args)
        return before, valid, loss, after

    logprobs, valid, loss, after = policy_step(params)
    # The gradient path scores exactly what the cached decoder sampled.
    np.testing.assert_allclose(logprobs, out.logprobs, atol=1e-5)
    np.testing.assert_array_equal(valid.sum(1), out.lengths)
    expected = -(logprobs[0].sum() - logprobs[1].sum()) / logprobs.size
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert after[0].sum() > logprobs[0].sum()  # positive advantage: more likely
    assert after[1].sum() < logprobs[1].sum()  # negative advantage: less likely
