"""Generation: greedy = argmax of the full forward, seeded sampling, stop tokens, left
padding, and every population member decoding at once."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import eggroll as egg
from eggroll.models import generate as gen
from eggroll.models import llm
from tests.models import llm_fixtures

N_NEW = 6
PARAMS, CONFIG, IDS, MASK, _ = llm_fixtures.load("qwen2")
forward = jax.jit(llm.forward, static_argnums=1)


@functools.cache
def _generator(temperature: float, stop_tokens: tuple = ()):
    return jax.jit(
        functools.partial(
            gen.generate,
            config=CONFIG,
            max_new_tokens=N_NEW,
            temperature=temperature,
            stop_tokens=stop_tokens,
            pad_id=0,
        )
    )


def _run(params=PARAMS, temperature=0.0, stop_tokens=(), key=0, ids=IDS, mask=MASK):
    fn = _generator(temperature, stop_tokens)
    return fn(params, prompt=ids, prompt_mask=mask, key=jax.random.key(key))


def _full_logits(out):
    """Logits of the full forward over prompt + generated tokens, at the positions that
    predicted each generated token: ``(B, N, V)``."""
    tokens = np.concatenate([IDS, np.asarray(out.tokens)], axis=1)
    mask = np.concatenate([MASK, np.ones_like(out.tokens, bool)], axis=1)
    logits, _ = forward(PARAMS, CONFIG, tokens, mask)
    return np.asarray(logits)[:, IDS.shape[1] - 1 : -1]


def test_greedy_equals_argmax_of_full_forward():
    out = _run()
    logits = _full_logits(out)
    np.testing.assert_array_equal(out.tokens, logits.argmax(-1))
    expected = llm.token_logprobs(jnp.asarray(logits), out.tokens)
    np.testing.assert_allclose(out.logprobs, expected, atol=1e-5)
    np.testing.assert_array_equal(out.lengths, [N_NEW, N_NEW])
    assert not np.any(out.stopped)


def test_sampling_is_deterministic_for_a_seed_and_scores_its_tokens():
    a, b, c = (
        _run(temperature=1.0, key=1),
        _run(temperature=1.0, key=1),
        _run(temperature=1.0, key=2),
    )
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.logprobs, b.logprobs)
    assert not np.array_equal(a.tokens, c.tokens)
    # The log-probs are the model's (temperature 1) for the sampled tokens.
    expected = llm.token_logprobs(jnp.asarray(_full_logits(a)), a.tokens)
    np.testing.assert_allclose(a.logprobs, expected, atol=1e-5)


def test_stop_tokens_stop_each_row_and_pad_after():
    free = np.asarray(_run().tokens)
    stop = int(free[0, 2])  # row 0 reaches it at step 2 (or earlier)
    out = _run(stop_tokens=(stop,))
    for row in range(2):
        hits = np.flatnonzero(free[row] == stop)
        length = int(hits[0]) + 1 if hits.size else N_NEW
        assert int(out.lengths[row]) == length
        assert bool(out.stopped[row]) == bool(hits.size)
        np.testing.assert_array_equal(out.tokens[row, :length], free[row, :length])
        np.testing.assert_array_equal(out.tokens[row, length:], 0)  # pad_id
        np.testing.assert_array_equal(out.logprobs[row, length:], 0.0)
    assert int(out.lengths[0]) <= 3


def test_left_padded_prompt_continues_like_the_unpadded_one():
    pad = int((~MASK[1]).sum())
    alone = _generator(0.0)(PARAMS, prompt=IDS[1:, pad:], prompt_mask=None, key=jax.random.key(0))
    batched = _run()
    np.testing.assert_array_equal(batched.tokens[1], alone.tokens[0])
    np.testing.assert_allclose(batched.logprobs[1], alone.logprobs[0], atol=1e-5)


def test_every_member_decodes_with_its_own_perturbation():
    es = egg.EGGROLL(4, sigma=0.05, rank=1, optimizer=optax.sgd(0.1), leaf_rule=llm.leaf_rule)
    state = es.init(jax.random.key(7), PARAMS)
    run = functools.partial(gen.generate, config=CONFIG, max_new_tokens=N_NEW, temperature=1.0)

    def fitness(view, ids, mask, key):
        out = run(view, prompt=ids, prompt_mask=mask, key=key)
        return jnp.sum(out.logprobs), out.tokens

    key = jax.random.key(5)
    scores, tokens = es.evaluate(state, fitness, IDS, MASK, key, has_aux=True)
    assert tokens.shape == (4, 2, N_NEW)
    one = jax.jit(fitness)
    for i in (0, 3):  # two noise draws, both signs (eager views cost ~1 s each)
        want_score, want_tokens = one(egg.materialize(es.member(state, i)), IDS, MASK, key)
        np.testing.assert_array_equal(tokens[i], want_tokens)
        np.testing.assert_allclose(scores[i], want_score, rtol=1e-4)
    assert len({np.asarray(t).tobytes() for t in tokens}) > 1  # members differ


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="max_new_tokens must be an integer ≥ 1"):
        gen.generate(PARAMS, CONFIG, IDS, MASK, jax.random.key(0), max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature must be ≥ 0"):
        gen.generate(PARAMS, CONFIG, IDS, MASK, jax.random.key(0), max_new_tokens=1, temperature=-1)
