"""The LLM decoder: parity with transformers, KV cache, member views, compute dtype."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import eggroll as egg
from eggroll.models import llm
from tests.models import llm_fixtures

forward = jax.jit(llm.forward, static_argnums=1)


@pytest.mark.parametrize("name", llm_fixtures.VARIANTS)
def test_logits_equal_transformers_reference(name):
    params, config, ids, mask, expected = llm_fixtures.load(name)
    logits, _ = forward(params, config, ids, mask)
    got = np.where(mask[..., None], np.asarray(logits), 0.0)
    # Both rows, the left-padded one included, at every real position.
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert np.abs(expected).max() > 1.0  # the reference is not trivially small


def test_fixture_features_matter():
    """The fixtures exercise what they claim: without the window / rope scaling the logits
    are far off, so the parity test checks those code paths."""
    for name, change in (("mistral", {"sliding_window": None}), ("llama", {"rope_scaling": None})):
        params, config, ids, mask, expected = llm_fixtures.load(name)
        logits, _ = forward(params, config.replace(**change), ids, mask)
        assert np.max(np.abs(np.where(mask[..., None], logits, 0) - expected)) > 0.1, name


def test_left_padding_gives_the_unpadded_logits():
    params, config, ids, mask, _ = llm_fixtures.load("qwen2")
    pad = int((~mask[1]).sum())
    alone, _ = forward(params, config, ids[1:, pad:], None)
    padded, _ = forward(params, config, ids, mask)
    np.testing.assert_allclose(padded[1, pad:], alone[0], atol=1e-5)


prefill = jax.jit(llm.prefill, static_argnums=(1, 4))


def test_prefill_of_the_last_position_only_gives_its_logits_and_the_same_cache():
    params, config, ids, mask, _ = llm_fixtures.load("qwen2")
    max_len = ids.shape[1] + 2
    every, cache = prefill(params, config, ids, mask, max_len)
    last_fn = jax.jit(functools.partial(llm.prefill, last_only=True), static_argnums=(1, 4))
    last, last_cache = last_fn(params, config, ids, mask, max_len)
    assert last.shape == (ids.shape[0], 1, config.vocab_size)
    np.testing.assert_allclose(last, every[:, -1:], atol=1e-5)
    for a, b in zip(*map(jax.tree_util.tree_leaves, (cache, last_cache)), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("chunks, first", [((7, 1, 1, 1), "prefill"), ((4, 3, 3), "empty cache")])
def test_kv_cache_decoding_equals_full_forward(chunks, first):
    """Prefill (or a forward into an empty cache), then decode chunk by chunk: the logits at
    every position equal the full forward pass's."""
    params, config, ids, mask, _ = llm_fixtures.load("qwen2")
    full, _ = forward(params, config, ids, mask)
    max_len = ids.shape[1] + 2  # spare slots stay unused
    start = 0
    for i, size in enumerate(chunks):
        part = slice(start, start + size)
        if i == 0 and first == "prefill":
            logits, cache = prefill(params, config, ids[:, part], mask[:, part], max_len)
        else:
            if i == 0:
                cache = llm.init_cache(config, ids.shape[0], max_len)
            logits, cache = forward(params, config, ids[:, part], mask[:, part], cache)
        valid = mask[:, part, None]
        np.testing.assert_allclose(
            np.where(valid, logits, 0), np.where(valid, full[:, part], 0), atol=1e-5
        )
        start += size
    assert int(cache.length) == ids.shape[1]
    np.testing.assert_array_equal(cache.positions, mask.sum(1))
    np.testing.assert_array_equal(cache.valid[:, : ids.shape[1]], mask)
    assert not np.any(cache.valid[:, ids.shape[1] :])


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def population(request):
    params, config, ids, mask, _ = llm_fixtures.load(request.param)
    es = egg.EGGROLL(4, sigma=0.1, rank=2, optimizer=optax.sgd(0.1), leaf_rule=llm.leaf_rule)
    return es, es.init(jax.random.key(3), params), config, ids, mask


def test_member_view_equals_materialised_weights(population):
    es, state, config, ids, mask = population
    view = es.member(state, 1)
    assert isinstance(view["layers"]["wq"], egg.LowRank)
    assert isinstance(view["embed"], egg.LowRank)  # the tied head reads it transposed
    assert not isinstance(view["layers"]["attn_norm"], egg.LowRank)  # stacked norms: full rank
    got, _ = forward(view, config, ids, mask)
    want, _ = forward(egg.materialize(view), config, ids, mask)
    plain, _ = forward(state.params, config, ids, mask)
    valid = mask[..., None]
    # fp32 rounding of x@W + s(x@A)Bᵀ vs x@(W + sABᵀ): within 1e-5 relative to logits ~ 3
    np.testing.assert_allclose(
        np.where(valid, got, 0), np.where(valid, want, 0), rtol=1e-5, atol=1e-5
    )
    assert np.max(np.abs(np.where(valid, got - plain, 0))) > 1e-3  # the perturbation is real


def test_leaf_rule_kinds():
    params, *_ = llm_fixtures.load("qwen2")
    specs = {
        s.path: s.kind for s in egg.EGGROLL(2, 0.1, leaf_rule=llm.leaf_rule).leaf_specs(params)
    }
    assert specs["layers/wq"] == specs["lm_head"] == specs["embed"] == "lowrank"
    assert specs["layers/bq"] == specs["layers/mlp_norm"] == specs["final_norm"] == "full"


def test_bfloat16_compute_keeps_float32_params():
    params, config, ids, mask, expected = llm_fixtures.load("qwen2")
    bf16 = config.replace(compute_dtype="bfloat16")
    logits, _ = forward(params, bf16, ids, mask)
    assert logits.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))
    err = np.max(np.abs(np.where(mask[..., None], logits, 0) - expected))
    assert 1e-4 < err < 0.25, err  # bf16 rounding, not a different model
    jaxpr = str(jax.make_jaxpr(lambda p: llm.forward(p, bf16, ids, mask))(params))
    assert "bf16[2,10,64]" in jaxpr  # activations run in bfloat16


def test_init_params_shapes_and_count():
    config = llm.tiny_byte_config()
    params = jax.eval_shape(lambda: llm.init_params(jax.random.key(0), config))
    shapes = jax.tree_util.tree_map(lambda x: x.shape, params)
    assert shapes["layers"]["wk"] == (4, 128, 64)
    assert "lm_head" not in shapes  # tied
    assert llm.count_params(params) == 821_376


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"num_kv_heads": 3}, "multiple of num_kv_heads"),
        ({"hidden_size": 130}, "not divisible by num_heads"),
        ({"model_type": "gpt2"}, "model_type must be one of"),
        ({"qkv_bias": True}, "set qkv_bias and o_bias alike"),
        ({"compute_dtype": "int8"}, "compute_dtype must be one of"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "'yarn' is not supported"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "needs"),
        ({"num_layers": 0}, "num_layers must be a positive integer"),
    ],
)
def test_config_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        llm.tiny_byte_config(**changes)
