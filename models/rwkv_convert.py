"""Convert an official RWKV-7 ``.pth`` checkpoint into an eggroll model folder.

    pip install ".[convert]"          # torch, only for reading .pth files
    python scripts/convert_rwkv7.py RWKV-x070-World-0.1B-v2.8-20241210-ctx4096.pth out/

The ``.pth`` is read with ``torch.load(weights_only=True)`` (no arbitrary unpickling); the
architecture version is recognised from the tensor names (RWKV-7 = ``x070``: ``att.x_r``,
``att.k_k``, ``att.r_k``; earlier versions and unknown layouts are refused), the shape of the
model (width, heads, layers, LoRA widths, vocabulary) is read from the tensors, and the folder
gets ``model.safetensors`` (the official names and shapes, the stored dtype kept unless
``--dtype float32``), ``config.json`` and the World vocabulary (``--vocab``, or the one of the
installed ``rwkv`` package). The library only ever reads the safetensors folder.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eggroll.models import rwkv7, rwkv_tokenizer
from eggroll.models.hf import ModelFolderError

_X070 = ("blocks.0.att.x_r", "blocks.0.att.k_k", "blocks.0.att.r_k", "blocks.0.att.a1")
_OLDER = {
    "x060": "blocks.0.att.time_maa_x",
    "x052/x051": "blocks.0.att.time_mix_g",
    "x050/x040": "blocks.0.att.time_mix_k",
}


def detect_version(names: set[str]) -> str:
    """``"x070"`` or :class:`~eggroll.models.hf.ModelFolderError` naming what was found."""
    if all(n in names for n in _X070):
        if any(".s_emb" in n or ".s1" in n for n in names):
            raise ModelFolderError(
                "an RWKV-7 DeepEmbed checkpoint (ffn.s_emb/s1/s2 tensors): not supported"
            )
        return rwkv7.VERSION
    for version, marker in _OLDER.items():
        if marker in names:
            raise ModelFolderError(
                f"unknown architecture version: this is an RWKV {version} checkpoint "
                f"({marker}); eggroll implements RWKV-7 ({rwkv7.VERSION}) only"
            )
    raise ModelFolderError(
        "unknown architecture version: not an RWKV-7 (x070) checkpoint (no "
        f"{', '.join(n for n in _X070 if n not in names)})"
    )


def infer_config(tensors: Mapping[str, Any], **changes: Any) -> rwkv7.RWKV7Config:
    """The :class:`~eggroll.models.rwkv7.RWKV7Config` implied by official tensor shapes."""
    names = set(tensors.keys())
    detect_version(names)

    def shape(name):
        if name not in names:
            raise ModelFolderError(f"tensor {name} is missing")
        return tuple(tensors[name].shape)

    layers = 1 + max(int(m.group(1)) for n in names if (m := re.match(r"blocks\.(\d+)\.", n)))
    vocab, width = shape("emb.weight")
    heads, head_size = shape("blocks.0.att.r_k")
    v_layer = 1 if layers > 1 else 0
    spec = dict(
        vocab_size=vocab,
        hidden_size=width,
        num_layers=layers,
        head_size=head_size,
        intermediate_size=shape("blocks.0.ffn.key.weight")[0],
        decay_lora=shape("blocks.0.att.w1")[-1],
        a_lora=shape("blocks.0.att.a1")[-1],
        v_lora=shape(f"blocks.{v_layer}.att.v1")[-1]
        if f"blocks.{v_layer}.att.v1" in names
        else None,
        gate_lora=shape("blocks.0.att.g1")[-1],
    )
    if heads * head_size != width:
        raise ModelFolderError(f"att.r_k has shape {(heads, head_size)}, width {width}")
    try:
        return rwkv7.RWKV7Config(**{**spec, **changes})
    except ValueError as err:
        raise ModelFolderError(f"the checkpoint describes an unsupported model: {err}") from err


def convert_tensors(
    tensors: Mapping[str, Any],
    folder: str | os.PathLike,
    *,
    vocab: str | os.PathLike | None = None,
    **config_changes: Any,
) -> rwkv7.RWKV7Config:
    """Write a model folder from official tensors (NumPy arrays or torch tensors). Checks the
    version, every name and shape; copies ``vocab`` when given."""
    config = infer_config(tensors, **config_changes)
    rwkv7.save_folder(folder, dict(tensors), config)
    if vocab is not None:
        shutil.copyfile(vocab, Path(folder) / rwkv_tokenizer.VOCAB_FILE)
    return config


def load_pth(path: str | os.PathLike) -> dict[str, Any]:
    """The tensors of a ``.pth`` state dict, read with ``weights_only=True``."""
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            'converting .pth checkpoints needs torch: pip install ".[convert]"'
        ) from err
    state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ModelFolderError(f"{path} is not a state dict of tensors")
    return dict(state)


def convert(
    pth: str | os.PathLike,
    folder: str | os.PathLike,
    *,
    vocab: str | os.PathLike | None = None,
    dtype: str = "keep",
) -> rwkv7.RWKV7Config:
    """``.pth`` → model folder (``dtype``: ``"keep"`` or ``"float32"``)."""
    tensors = load_pth(pth)
    if dtype == "float32":
        tensors = {k: v.float() for k, v in tensors.items()}
    elif dtype != "keep":
        raise ValueError(f"dtype must be 'keep' or 'float32', got {dtype!r}")
    if vocab is None:
        vocab = rwkv_tokenizer.package_vocab()
    return convert_tensors(tensors, folder, vocab=vocab)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="convert_rwkv7", description="RWKV-7 .pth → eggroll safetensors model folder"
    )
    p.add_argument("pth", help="the official .pth checkpoint")
    p.add_argument("folder", help="output model folder")
    p.add_argument("--vocab", help=f"{rwkv_tokenizer.VOCAB_FILE} (default: the rwkv package's)")
    p.add_argument("--dtype", choices=("keep", "float32"), default="keep")
    args = p.parse_args(argv)
    config = convert(args.pth, args.folder, vocab=args.vocab, dtype=args.dtype)
    has_vocab = (Path(args.folder) / rwkv_tokenizer.VOCAB_FILE).is_file()
    print(
        f"wrote {args.folder}: RWKV-7 {config.num_layers} layers × width {config.hidden_size} "
        f"({config.num_heads} heads of {config.head_size}), vocabulary {config.vocab_size}"
        + ("" if has_vocab else f"; no tokenizer (pass --vocab {rwkv_tokenizer.VOCAB_FILE})")
    )


if __name__ == "__main__":
    main()
