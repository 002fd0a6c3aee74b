"""Hugging Face folders: save/load round trips, shards, bfloat16 weights, clear errors,
and the byte-level tokenizer."""

import json
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from eggroll.models import hf, llm
from eggroll.models import tokenizer as tokenizer_lib
from tests.models import llm_fixtures

QWEN2 = llm_fixtures.FIXTURES / "qwen2"


def _assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert x.dtype == y.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_load_roundtrip_is_bitwise(tmp_path):
    config = llm.tiny_byte_config(hidden_size=32, intermediate_size=48, num_layers=2)
    params = llm.init_params(jax.random.key(0), config)
    hf.save(tmp_path / "m", params, config, tokenizer_lib.byte_level())
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    loaded, loaded_config = hf.load(tmp_path / "m")
    assert loaded_config == config
    _assert_trees_equal(params, loaded)
    tok = hf.load_tokenizer(tmp_path / "m", loaded_config)
    assert (tok.bos_id, tok.eos_ids, tok.pad_id) == (256, (257,), 258)


@pytest.mark.parametrize("name", llm_fixtures.VARIANTS)
def test_downloaded_checkpoint_resaves_identically(tmp_path, name):
    params, config, *_ = llm_fixtures.load(name)
    hf.save(tmp_path, params, config)
    again, again_config = hf.load(tmp_path)
    assert again_config == config
    _assert_trees_equal(params, again)
    # The tensors are the reference file's, names, shapes and values.
    ours = load_file(str(tmp_path / "model.safetensors"))
    theirs = load_file(str(llm_fixtures.FIXTURES / name / "model.safetensors"))
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key])


def test_sharded_checkpoint_loads(tmp_path):
    tensors = load_file(str(QWEN2 / "model.safetensors"))
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / shard))
        weight_map.update({k: shard for k in keys})
    (tmp_path / hf.INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    shutil.copy(QWEN2 / "config.json", tmp_path)
    params, _ = hf.load(tmp_path)
    _assert_trees_equal(params, llm_fixtures.load("qwen2")[0])
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lists shard model-00002-of-00002"):
        hf.load(tmp_path)
    with pytest.raises(hf.ModelFolderError, match="sharded checkpoint"):
        hf.save(tmp_path, params, llm_fixtures.load("qwen2")[1])


def test_bfloat16_weights_load_as_float32(tmp_path, monkeypatch):
    import ml_dtypes

    tensors = load_file(str(QWEN2 / "model.safetensors"))
    save_file(
        {k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()},
        str(tmp_path / hf.WEIGHTS_FILE),
    )
    shutil.copy(QWEN2 / "config.json", tmp_path)
    params, _ = hf.load(tmp_path)
    reference = llm_fixtures.load("qwen2")[0]
    rounded = jax.tree_util.tree_map(
        lambda x: np.asarray(x).astype(ml_dtypes.bfloat16).astype(np.float32), reference
    )
    _assert_trees_equal(params, rounded)
    # The fallback reader for safetensors versions without a NumPy bfloat16 gives the same.
    name = "model.layers.1.self_attn.q_proj.weight"
    np.testing.assert_array_equal(
        hf._read_raw(tmp_path / hf.WEIGHTS_FILE, name),
        tensors[name].astype(ml_dtypes.bfloat16).astype(np.float32),
    )


def _copy_fixture(tmp_path, config_changes=None):
    shutil.copy(QWEN2 / "model.safetensors", tmp_path)
    config = json.loads((QWEN2 / "config.json").read_text())
    config.update(config_changes or {})
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "unsupported architecture"),
        ({"architectures": ["Qwen2ForSequenceClassification"]}, "unsupported architecture"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported"),
        ({"use_sliding_window": True}, "use_sliding_window=true is not supported"),
        ({"rope_parameters": {"rope_type": "yarn", "factor": 2.0}}, "'yarn' is not supported"),
        ({"num_key_value_heads": 3}, "multiple of num_kv_heads"),
        ({"num_hidden_layers": 1}, "not part of a qwen2 model"),  # layer 1 is extra
        ({"intermediate_size": 80}, r"has shape \(96, 64\).*implies \(80, 64\)"),
    ],
)
def test_unsupported_or_inconsistent_checkpoints_fail_clearly(tmp_path, changes, match):
    with pytest.raises(hf.ModelFolderError, match=match):
        hf.load(_copy_fixture(tmp_path, changes))


def test_missing_files_and_tensors_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hf.load(tmp_path / "nowhere")
    shutil.copy(QWEN2 / "model.safetensors", tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        hf.load(tmp_path)
    folder = _copy_fixture(tmp_path)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no model.safetensors.*pytorch_model.bin"):
        hf.load(folder)
    tensors = load_file(str(QWEN2 / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(hf.ModelFolderError, match=r"missing.*model.layers.1.mlp.up_proj.weight"):
        hf.load(folder)
    tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((96, 64), np.float32)
    tensors["model.layers.0.self_attn.q_norm.weight"] = np.ones(16, np.float32)  # Qwen3-style
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(hf.ModelFolderError, match=r"not part of.*q_norm.weight.*architecture"):
        hf.load(folder)
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        hf.load_tokenizer(folder, llm_fixtures.load("qwen2")[1])


def test_missing_extra_is_named(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *args):
        if name.startswith("safetensors"):
            raise ImportError("no module")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ImportError, match=r'pip install "\.\[llm\]"'):
        hf.load(QWEN2)


def test_byte_tokenizer_roundtrip_and_left_padding(tmp_path):
    tok = tokenizer_lib.byte_level()
    text = "héllo, wörld\n\t\x00 ∑ 🙂"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.encode("hi", add_bos=True) == [256, 104, 105]
    assert tok.decode([256, 104, 257], skip_special_tokens=False) == "<|bos|>h<|eos|>"
    tok.save(tmp_path)
    again = tokenizer_lib.load(tmp_path)
    assert again.encode(text) == ids and (again.bos_id, again.eos_ids, again.pad_id) == (
        256,
        (257,),
        258,
    )
    batch, mask = tok.batch(["ab", "abcd"], add_bos=True)
    np.testing.assert_array_equal(batch, [[258, 258, 256, 97, 98], [256, 97, 98, 99, 100]])
    np.testing.assert_array_equal(mask, [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="every prompt is empty"):
        tok.batch([""])
