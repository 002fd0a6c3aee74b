"""Hugging Face format checkpoints for :mod:`eggroll.models.llm`: load and save.

A model folder holds ``config.json``, the weights as ``model.safetensors`` or as shards listed
in ``model.safetensors.index.json``, and (optionally) ``tokenizer.json``. Downloaded Llama,
Qwen2 and Mistral checkpoints and models saved by :func:`save` load through the same code.

* Weights are read with ``safetensors``' NumPy API (``safe_open(framework="np")``) and
  converted to float32 master weights, whatever dtype they were stored in (bfloat16 and float16
  included); pick the compute dtype with ``load(..., compute_dtype="bfloat16")``.
* Hugging Face ``Linear`` weights are ``(out, in)``; ours are ``(in, out)`` (``x @ W``), so
  projections and an untied ``lm_head`` are transposed on the way in and out. Per-layer tensors
  are stacked on a leading layer axis.
* :func:`save` writes ``config.json`` (the ``transformers`` field names), one
  ``model.safetensors`` (float32, ``{"format": "pt"}`` metadata) and the tokenizer, each file
  through a temporary file and a rename; ``config.json`` comes last.

``safetensors`` and ``tokenizers`` are the ``llm`` extra: ``pip install ".[llm]"``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import eggroll as egg
from eggroll.checkpoint import write_atomic
from eggroll.models import llm
from eggroll.models import tokenizer as tokenizer_lib
from eggroll.models.tokenizer import require

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mistral": "MistralForCausalLM",
}

# Hugging Face tensor name → (our leaf, transpose). Layer tensors are under
# "model.layers.{i}." and stack into layers/<leaf>.
_TOP = {
    "model.embed_tokens.weight": ("embed", False),
    "model.norm.weight": ("final_norm", False),
    "lm_head.weight": ("lm_head", True),
}
_LAYER = {
    "input_layernorm.weight": ("attn_norm", False),
    "post_attention_layernorm.weight": ("mlp_norm", False),
    # attention projections (stored (out, in): transposed) and their biases (Qwen2, or Llama
    # with attention_bias), then the SwiGLU MLP
    **{f"self_attn.{p}_proj.weight": (f"w{p}", True) for p in "qkvo"},
    **{f"self_attn.{p}_proj.bias": (f"b{p}", False) for p in "qkvo"},
    **{f"mlp.{p}_proj.weight": (f"w_{p}", True) for p in ("gate", "up", "down")},
}
_IGNORED = re.compile(r"rotary_emb\.inv_freq$")  # buffers some old checkpoints saved


class ModelFolderError(ValueError):
    """A model folder that exists but cannot be used (unsupported or inconsistent)."""


# ------------------------------------------------------------------------------ config
def config_from_hf(hf: dict[str, Any], compute_dtype: str = "float32") -> llm.LLMConfig:
    """An :class:`~eggroll.models.llm.LLMConfig` from a ``config.json`` dict.

    Raises :class:`ModelFolderError` for architectures other than Llama/Qwen2/Mistral and for
    features this implementation does not have (non-SiLU MLPs, MLP biases, Qwen2 sliding
    windows, rope scalings other than linear/llama3).
    """
    model_type = hf.get("model_type")
    archs = list(hf.get("architectures") or [])
    known = sorted(ARCHITECTURES.values())
    if model_type not in ARCHITECTURES or any(a not in known for a in archs):
        raise ModelFolderError(
            f"unsupported architecture: model_type={model_type!r}, architectures={archs}. "
            f"eggroll.models.llm implements Llama/Qwen2/Mistral-style decoders "
            f"(model_type llama, qwen2 or mistral; architectures {known}); use a checkpoint "
            "of one of these, or add the architecture to eggroll.models.llm"
        )
    missing = [
        k
        for k in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
        )
        if k not in hf
    ]
    if missing:
        raise ModelFolderError(f"config.json lacks {missing}")
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ModelFolderError(f"hidden_act={act!r} is not supported: the MLP is SwiGLU (silu)")
    if hf.get("mlp_bias"):
        raise ModelFolderError("mlp_bias=true is not supported (no MLP biases in this model)")
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = float(hf.get("rope_theta", rope.pop("rope_theta", 10000.0)))
    rope.pop("rope_theta", None)
    if model_type == "qwen2":
        if hf.get("use_sliding_window"):
            raise ModelFolderError(
                "Qwen2 with use_sliding_window=true is not supported (per-layer windows); "
                "set it to false if your prompts are shorter than the window"
            )
        qkv_bias, o_bias, window = True, False, None
    else:
        qkv_bias = o_bias = bool(hf.get("attention_bias", False))
        window = hf.get("sliding_window") if model_type == "mistral" else None
    eos = hf.get("eos_token_id")
    try:
        return llm.LLMConfig(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            num_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
            head_dim=hf.get("head_dim") or None,
            rope_theta=theta,
            rope_scaling=rope or None,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=qkv_bias,
            o_bias=o_bias,
            sliding_window=window,
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            model_type=model_type,
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=() if eos is None else eos,
            pad_token_id=hf.get("pad_token_id"),
            compute_dtype=compute_dtype,
        )
    except ValueError as err:
        raise ModelFolderError(f"config.json describes an unsupported model: {err}") from err


def config_to_hf(config: llm.LLMConfig) -> dict[str, Any]:
    """The ``config.json`` dict of a config (``transformers`` field names; weights float32)."""
    c = config
    eos = list(c.eos_token_id)
    hf: dict[str, Any] = {
        "architectures": [ARCHITECTURES[c.model_type]],
        "model_type": c.model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": dict(c.rope_scaling) if c.rope_scaling else None,
        "max_position_embeddings": c.max_position_embeddings,
        "tie_word_embeddings": c.tie_embeddings,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
        "pad_token_id": c.pad_token_id,
        "torch_dtype": "float32",
    }
    if c.model_type == "qwen2":
        hf.update(use_sliding_window=False, sliding_window=None)
    else:
        hf.update(attention_bias=c.o_bias, mlp_bias=False)
        if c.model_type == "mistral":
            hf["sliding_window"] = c.sliding_window
    return hf


def load_config(folder: str | os.PathLike, compute_dtype: str = "float32") -> llm.LLMConfig:
    """Read and check ``folder/config.json``."""
    path = Path(folder) / CONFIG_FILE
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    if not path.is_file():
        raise FileNotFoundError(
            f"no {CONFIG_FILE} in {folder}: a Hugging Face model folder needs config.json next "
            "to its *.safetensors weights (download the whole repository, not just the weights)"
        )
    try:
        hf = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as err:
        raise ModelFolderError(f"{path} is not valid JSON: {err}") from err
    return config_from_hf(hf, compute_dtype)


# ------------------------------------------------------------------------------ weights
def _weight_files(folder: Path) -> dict[str, Path]:
    """Tensor name → the safetensors file holding it (single file or sharded index)."""
    safetensors = require("safetensors")
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text("utf-8")).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ModelFolderError(f"{index} has no 'weight_map' object")
        files = {name: folder / shard for name, shard in weight_map.items()}
        for shard in sorted(set(files.values())):
            if not shard.is_file():
                raise FileNotFoundError(
                    f"{INDEX_FILE} lists shard {shard.name} but it is not in {folder}: "
                    "download every shard"
                )
        return files
    single = folder / WEIGHTS_FILE
    if not single.is_file():
        others = sorted(p.name for p in folder.glob("*.bin")) + sorted(
            p.name for p in folder.glob("*.safetensors")
        )
        hint = f" (found {others})" if others else ""
        raise FileNotFoundError(
            f"no {WEIGHTS_FILE} or {INDEX_FILE} in {folder}{hint}: eggroll reads Hugging Face "
            "safetensors weights; convert .bin checkpoints with transformers' save_pretrained"
        )
    with safetensors.safe_open(str(single), framework="np") as handle:
        return {name: single for name in handle.keys()}


def _read_raw(path: Path, name: str) -> np.ndarray:
    """Read one BF16 tensor straight from the file format (8-byte header length, JSON
    header, raw little-endian data): for ``safetensors`` versions whose NumPy API has no
    bfloat16. Returns float32."""
    with open(path, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_len))
    info = header[name]
    if info["dtype"] != "BF16":
        raise ModelFolderError(f"cannot read tensor {name!r} of dtype {info['dtype']} in {path}")
    begin, end = info["data_offsets"]
    raw = np.fromfile(path, dtype="<u2", count=(end - begin) // 2, offset=8 + header_len + begin)
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


def _get(handles: dict, path: Path, name: str) -> np.ndarray:
    try:
        array = handles[path].get_tensor(name)
    except (TypeError, ValueError, KeyError):
        array = _read_raw(path, name)
    return np.asarray(array, dtype=np.float32)


def expected_tensors(config: llm.LLMConfig) -> dict[str, tuple[tuple[str, ...], int | None, bool]]:
    """Every Hugging Face tensor name a config needs → (our leaf path, layer or None,
    transpose)."""
    shapes = llm.param_shapes(config)
    names = {}
    for hf_name, (leaf, transpose) in _TOP.items():
        if leaf in shapes:
            names[hf_name] = ((leaf,), None, transpose)
    for i in range(config.num_layers):
        for suffix, (leaf, transpose) in _LAYER.items():
            if leaf in shapes["layers"]:
                names[f"model.layers.{i}.{suffix}"] = (("layers", leaf), i, transpose)
    return names


def load_params(folder: str | os.PathLike, config: llm.LLMConfig) -> dict[str, Any]:
    """Float32 parameters of ``folder``'s safetensors weights, in our layout.

    Raises :class:`ModelFolderError` naming missing tensors, tensors this layout does not know
    (another architecture, a quantised checkpoint) and shape mismatches.
    """
    safetensors = require("safetensors")
    folder = Path(folder)
    files = _weight_files(folder)
    expected = expected_tensors(config)
    missing = sorted(set(expected) - set(files))
    if missing:
        raise ModelFolderError(
            f"{len(missing)} tensors missing from the weights in {folder}, e.g. {missing[:3]}: "
            "the checkpoint is incomplete or does not match config.json "
            f"(tie_word_embeddings={config.tie_embeddings}, qkv biases={config.qkv_bias})"
        )
    unknown = sorted(
        n
        for n in set(files) - set(expected)
        if not _IGNORED.search(n) and not (n == "lm_head.weight" and config.tie_embeddings)
    )
    if unknown:
        raise ModelFolderError(
            f"{len(unknown)} tensors in {folder} are not part of a {config.model_type} model "
            f"as configured, e.g. {unknown[:3]}: the checkpoint may be another architecture or "
            "quantised; eggroll loads plain float Llama/Qwen2/Mistral weights"
        )
    shapes = llm.param_shapes(config)
    out: dict[str, Any] = {
        k: (np.empty(v, np.float32) if isinstance(v, tuple) else None) for k, v in shapes.items()
    }
    out["layers"] = {k: np.empty(v, np.float32) for k, v in shapes["layers"].items()}
    with ExitStack() as stack:
        handles = {
            path: stack.enter_context(safetensors.safe_open(str(path), framework="np"))
            for path in sorted(set(files[n] for n in expected))
        }
        for name, (leaf_path, layer, transpose) in expected.items():
            array = _get(handles, files[name], name)
            if transpose:
                array = array.T
            target = out[leaf_path[0]] if len(leaf_path) == 1 else out["layers"][leaf_path[1]]
            want = target.shape if layer is None else target.shape[1:]
            if array.shape != want:
                hf_shape = array.T.shape if transpose else array.shape
                raise ModelFolderError(
                    f"tensor {name} has shape {hf_shape} in {files[name].name} but config.json "
                    f"implies {want[::-1] if transpose else want}"
                )
            if layer is None:
                target[...] = array
            else:
                target[layer] = array
    return jax.tree_util.tree_map(jnp.asarray, out)


def load(
    folder: str | os.PathLike, compute_dtype: str = "float32"
) -> tuple[dict[str, Any], llm.LLMConfig]:
    """``(params, config)`` of a Hugging Face model folder (float32 master weights)."""
    config = load_config(folder, compute_dtype)
    return load_params(folder, config), config


def load_tokenizer(folder: str | os.PathLike, config: llm.LLMConfig) -> tokenizer_lib.Tokenizer:
    """``folder/tokenizer.json``, with the special ids of ``config`` where it names them."""
    return tokenizer_lib.load(
        folder,
        bos_id=config.bos_token_id,
        eos_ids=config.eos_token_id,
        pad_id=config.pad_token_id,
    )


# ------------------------------------------------------------------------------ saving
def to_hf_tensors(params: Any, config: llm.LLMConfig) -> dict[str, np.ndarray]:
    """Our parameters (or a member view, materialised) as Hugging Face float32 tensors."""
    params = egg.materialize(params)
    shapes = llm.param_shapes(config)
    got = jax.tree_util.tree_structure(params)
    want = jax.tree_util.tree_structure(shapes, is_leaf=lambda s: isinstance(s, tuple))
    if got != want:
        raise ValueError(f"params do not match the config's layout: {got} vs {want}")
    tensors = {}
    for name, (leaf_path, layer, transpose) in expected_tensors(config).items():
        leaf = params[leaf_path[0]] if len(leaf_path) == 1 else params["layers"][leaf_path[1]]
        array = np.asarray(leaf if layer is None else leaf[layer], dtype=np.float32)
        expected = shapes[leaf_path[0]] if len(leaf_path) == 1 else shapes["layers"][leaf_path[1]]
        if array.shape != (expected if layer is None else expected[1:]):
            raise ValueError(f"{'/'.join(leaf_path)} has shape {leaf.shape}, expected {expected}")
        tensors[name] = np.ascontiguousarray(array.T if transpose else array)
    return tensors


def save(
    folder: str | os.PathLike,
    params: Any,
    config: llm.LLMConfig,
    tokenizer: tokenizer_lib.Tokenizer | None = None,
) -> Path:
    """Write a Hugging Face model folder that :func:`load` (and ``transformers``) can read.

    Each file is written to a temporary name and renamed, ``config.json`` last, so a reader
    never sees a torn file. Refuses a folder holding a sharded index (the index would shadow
    the new weights). Returns the folder.
    """
    safetensors_numpy = require("safetensors.numpy")
    folder = Path(folder)
    if (folder / INDEX_FILE).exists():
        raise ModelFolderError(
            f"{folder} holds a sharded checkpoint ({INDEX_FILE}); save into a new folder"
        )
    tensors = to_hf_tensors(params, config)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{WEIGHTS_FILE}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        safetensors_numpy.save_file(tensors, tmp, metadata={"format": "pt"})
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, folder / WEIGHTS_FILE)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if tokenizer is not None:
        tokenizer.save(folder)
    write_atomic(folder / CONFIG_FILE, (json.dumps(config_to_hf(config), indent=2) + "\n").encode())
    return folder
