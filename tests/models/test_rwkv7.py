"""RWKV-7: parity with the reference (BlinkDL's rwkv package, stored fixtures made by
scripts/make_rwkv7_fixture.py), prefill = steps, member views, population decoding, folders
and the converter's checks."""

import functools
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import eggroll as egg
from eggroll.models import hf, lm_train, rwkv7, rwkv_convert
from tests.models.llm_fixtures import FIXTURES

VARIANTS = ("rwkv7_a", "rwkv7_b")
TOL = 1e-4  # the acceptance: max |Δlogit| against the reference
forward = jax.jit(rwkv7.forward, static_argnums=1)
step = jax.jit(rwkv7.step, static_argnums=1)


@functools.cache
def _load(name):
    folder = FIXTURES / name
    params, config = rwkv7.load(folder)
    arrays = {
        k: np.load(folder / f"{k}.npy")
        for k in ("prompt", "mask", "prompt_logits", "tokens", "step_logits")
        + ("state_att", "state_wkv", "state_ffn")
    }
    return params, config, arrays


@functools.cache
def _generator(config, new_tokens, temperature=0.0):
    return jax.jit(
        functools.partial(
            rwkv7.generate,
            config=config,
            max_new_tokens=new_tokens,
            temperature=temperature,
            pad_id=0,
        )
    )


@pytest.mark.parametrize("name", VARIANTS)
def test_prompt_and_steps_match_reference(name):
    params, config, f = _load(name)
    mask = f["mask"]
    logits, state = forward(params, config, f["prompt"], mask)
    got = np.where(mask[..., None], np.asarray(logits), 0.0)
    assert np.max(np.abs(got - f["prompt_logits"])) <= TOL
    np.testing.assert_allclose(state.att_shift, f["state_att"], atol=TOL)
    np.testing.assert_allclose(state.ffn_shift, f["state_ffn"], atol=TOL)
    np.testing.assert_allclose(state.wkv, f["state_wkv"], atol=TOL)
    steps = []
    for i in range(f["step_logits"].shape[1]):  # teacher-forced: the reference's tokens
        out, state = step(params, config, jnp.asarray(f["tokens"][:, i]), state)
        steps.append(np.asarray(out))
    assert np.max(np.abs(np.stack(steps, 1) - f["step_logits"])) <= TOL


@pytest.mark.parametrize("name", VARIANTS)
def test_greedy_continuation_is_token_identical(name):
    params, config, f = _load(name)
    n = f["tokens"].shape[1]
    out = _generator(config, n)(params, prompt=f["prompt"], prompt_mask=f["mask"], key=None)
    np.testing.assert_array_equal(out.tokens, f["tokens"])
    np.testing.assert_array_equal(out.lengths, [n, n])


def test_prefill_and_step_paths_agree():
    params, config, f = _load("rwkv7_b")
    ids, everything = f["prompt"], np.ones_like(f["mask"])  # the compiled shapes of the parity test
    logits, state = forward(params, config, ids, everything)
    s = rwkv7.init_state(config, 2)
    outs = []
    for t in range(ids.shape[1]):
        out, s = step(params, config, jnp.asarray(ids[:, t]), s)
        outs.append(out)
    np.testing.assert_allclose(np.stack(outs, 1), logits, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(s), jax.tree_util.tree_leaves(state), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # The prefill a decoder uses: the last position's logits only, the same state.
    last, last_state = rwkv7.prefill(params, config, ids, everything, last_only=True)
    np.testing.assert_allclose(last, logits[:, -1:], atol=1e-5)
    for a, b in zip(*map(jax.tree_util.tree_leaves, (last_state, state)), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # A prompt split in two calls continues the state.
    first, mid = forward(params, config, ids[:, :4], None)
    rest, end = forward(params, config, ids[:, 4:], None, mid)
    np.testing.assert_allclose(np.concatenate([first, rest], 1), logits, atol=1e-5)


@functools.cache
def _population():
    params, config, f = _load("rwkv7_a")
    es = egg.EGGROLL(4, sigma=0.05, rank=2, leaf_rule=rwkv7.leaf_rule)
    return es, es.init(jax.random.key(0), params), config, f


def test_member_view_equals_materialised_weights():
    es, state, config, f = _population()
    view = es.member(state, 3)
    assert isinstance(view["layers"]["key"], egg.LowRank)
    assert isinstance(view["layers"]["w1"], egg.LowRank)  # LoRA factors: low-rank too
    assert not egg.nn.is_view(view["layers"]["x_r"])  # vectors: full-rank, already perturbed
    dense = egg.materialize(view)
    got, got_state = forward(view, config, f["prompt"], f["mask"])
    want, want_state = forward(dense, config, f["prompt"], f["mask"])
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(got_state.wkv, want_state.wkv, atol=1e-4)
    plain, _ = forward(state.params, config, f["prompt"], f["mask"])
    assert np.max(np.abs(np.asarray(got) - np.asarray(plain))) > 1e-3  # it is perturbed


def test_members_decode_together_each_with_its_own_state():
    es, state, config, f = _population()
    decode = _generator(config, 5)

    def one(i):
        return decode(es.member(state, i), prompt=f["prompt"], prompt_mask=f["mask"], key=None)

    together = jax.jit(jax.vmap(one))(jnp.arange(4))
    assert together.tokens.shape == (4, 2, 5)
    for i in (3,):
        alone = decode(
            egg.materialize(es.member(state, i)),
            prompt=f["prompt"],
            prompt_mask=f["mask"],
            key=None,
        )
        np.testing.assert_array_equal(together.tokens[i], alone.tokens)
        np.testing.assert_allclose(together.logprobs[i], alone.logprobs, atol=1e-4)
    # The decode loop carries one fixed-size state per sequence (no cache that grows).
    assert rwkv7.state_bytes(config, 1) == sum(
        x.nbytes for x in jax.tree_util.tree_leaves(rwkv7.init_state(config, 1))
    )


def test_sampling_and_stop_tokens():
    params, config, f = _load("rwkv7_a")
    greedy = f["tokens"]
    stop = int(greedy[0, 2])
    fn = jax.jit(
        functools.partial(
            rwkv7.generate, config=config, max_new_tokens=6, stop_tokens=(stop,), pad_id=-1
        )
    )
    out = fn(params, prompt=f["prompt"], prompt_mask=f["mask"], key=None)
    np.testing.assert_array_equal(out.tokens[0], [*greedy[0, :3], -1, -1, -1])
    assert out.stopped[0] and out.lengths[0] == 3
    hot = _generator(config, 6, 1.0)
    a = hot(params, prompt=f["prompt"], prompt_mask=f["mask"], key=jax.random.key(1))
    b = hot(params, prompt=f["prompt"], prompt_mask=f["mask"], key=jax.random.key(1))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert np.all(np.asarray(a.logprobs) < 0)


# ------------------------------------------------------------------------------ folders
def test_save_load_roundtrip_and_official_names(tmp_path):
    params, config, _ = _load("rwkv7_b")
    rwkv7.save(tmp_path / "m", params, config)
    again, again_config = rwkv7.load(tmp_path / "m")
    assert again_config == config
    for x, y in zip(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(again), strict=True
    ):
        np.testing.assert_array_equal(x, y)
    theirs = load_file(str(FIXTURES / "rwkv7_b" / "model.safetensors"))
    ours = load_file(str(tmp_path / "m" / "model.safetensors"))
    # The same tensors, names and shapes (layer 0's unused v0/v1/v2 written as zeros).
    assert set(ours) - set(theirs) == {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"}
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key], value)
    assert rwkv7.is_model_folder(tmp_path / "m") and not rwkv7.is_model_folder(tmp_path)


def _tensors():
    return load_file(str(FIXTURES / "rwkv7_a" / "model.safetensors"))


def test_converter_infers_the_config():
    config = rwkv_convert.infer_config(_tensors())
    assert config == _load("rwkv7_a")[1]
    assert (config.num_heads, config.decay_lora, config.gate_lora) == (2, 8, 16)
    # The official LoRA widths of the 0.1B shape.
    big = rwkv7.RWKV7Config(vocab_size=65536, hidden_size=768, num_layers=12)
    assert (big.decay_lora, big.a_lora, big.v_lora, big.gate_lora) == (64, 64, 32, 128)


def test_converter_errors(tmp_path):
    tensors = _tensors()
    missing = {k: v for k, v in tensors.items() if k != "blocks.1.att.key.weight"}
    with pytest.raises(hf.ModelFolderError, match=r"missing.*blocks\.1\.att\.key\.weight"):
        rwkv_convert.convert_tensors(missing, tmp_path / "a")
    wrong = {**tensors, "blocks.1.ffn.value.weight": np.zeros((32, 95), np.float32)}
    with pytest.raises(hf.ModelFolderError, match=r"blocks\.1\.ffn\.value\.weight.*\(32, 95\)"):
        rwkv_convert.convert_tensors(wrong, tmp_path / "b")
    extra = {**tensors, "blocks.0.ffn.s_emb.weight": np.zeros((97, 1024), np.float32)}
    with pytest.raises(hf.ModelFolderError, match="DeepEmbed"):
        rwkv_convert.convert_tensors(extra, tmp_path / "c")
    v6 = {k: v for k, v in tensors.items() if ".att." not in k}
    v6["blocks.0.att.time_maa_x"] = np.zeros((1, 1, 32), np.float32)
    with pytest.raises(hf.ModelFolderError, match="unknown architecture version.*x060"):
        rwkv_convert.convert_tensors(v6, tmp_path / "d")
    with pytest.raises(hf.ModelFolderError, match="unknown architecture version"):
        rwkv_convert.convert_tensors({"emb.weight": tensors["emb.weight"]}, tmp_path / "e")
    assert not any((tmp_path / x).exists() for x in "abcde")


def test_loader_errors(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(FIXTURES / "rwkv7_a", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "version": "x080"}))
    with pytest.raises(hf.ModelFolderError, match="unknown RWKV architecture version 'x080'"):
        rwkv7.load(folder)
    (folder / "config.json").write_text(json.dumps({**config, "num_layers": 3}))
    with pytest.raises(hf.ModelFolderError, match=r"missing.*blocks\.2\."):
        rwkv7.load(folder)
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 48}))
    with pytest.raises(hf.ModelFolderError, match="has shape"):
        rwkv7.load(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="convert_rwkv7"):
        rwkv7.load(folder)
    with pytest.raises(hf.ModelFolderError, match="unsupported architecture"):
        hf.load(FIXTURES / "rwkv7_a")  # the HF loader names the model type it cannot read


# ------------------------------------------------------------------------------ GRPO, bf16
def test_completion_logprobs_follow_the_recurrence():
    """The GRPO baseline's log-probs (one differentiable :func:`rwkv7.forward` over prompt +
    answer) equal the sampler's, which come from prefill + one-token steps; the policy step
    itself is tested in test_rwkv7_finetune.py."""
    params, config, f = _load("rwkv7_a")
    prompt, mask = jnp.asarray(f["prompt"]), jnp.asarray(f["mask"])
    out = _generator(config, 6, 1.0)(params, prompt=prompt, prompt_mask=mask, key=jax.random.key(1))
    lengths = jnp.array([6, 4])  # the second answer counts 4 tokens
    score = jax.jit(lm_train.completion_logprobs, static_argnums=1)
    logprobs, valid = score(params, config, prompt, mask, out.tokens, lengths)
    np.testing.assert_allclose(logprobs[0], out.logprobs[0], atol=1e-5)
    np.testing.assert_allclose(logprobs[1, :4], out.logprobs[1, :4], atol=1e-5)
    np.testing.assert_array_equal(valid.sum(1), [6, 4])
    assert np.all(np.asarray(logprobs[1, 4:]) == 0)


def test_bfloat16_compute_is_close_to_float32_for_the_model_and_a_member_view():
    params, config, f = _load("rwkv7_b")
    bf16 = config.replace(compute_dtype="bfloat16")
    want, _ = forward(params, config, f["prompt"], f["mask"])
    got, state = forward(params, bf16, f["prompt"], f["mask"])
    assert got.dtype == jnp.float32 and state.wkv.dtype == jnp.float32  # stats and state f32
    real = np.asarray(f["mask"])[..., None]
    err = np.max(np.abs(np.where(real, np.asarray(got) - np.asarray(want), 0.0)))
    assert err <= 0.05 * np.max(np.abs(np.where(real, want, 0.0)))  # bf16 has 8 mantissa bits
    # A member's view in bf16 computes what its materialised weights do (within bf16).
    es = egg.EGGROLL(2, sigma=0.05, rank=2, leaf_rule=rwkv7.leaf_rule)
    member = es.member(es.init(jax.random.key(0), params), 1)
    via_view, _ = forward(member, bf16, f["prompt"], f["mask"])
    via_dense, _ = forward(egg.materialize(member), bf16, f["prompt"], f["mask"])
    gap = np.max(np.abs(np.where(real, np.asarray(via_view) - np.asarray(via_dense), 0.0)))
    assert gap <= 0.05 * np.max(np.abs(np.where(real, via_dense, 0.0)))
    assert np.max(np.abs(np.where(real, np.asarray(via_dense) - np.asarray(got), 0.0))) > 0
