"""Make the LLM parity fixtures: tiny random Hugging Face checkpoints + reference logits.

    pip install torch transformers        # only for this script; not eggroll dependencies
    python scripts/make_llm_fixture.py    # writes tests/models/fixtures/<variant>/

For each variant a tiny model of ``transformers``' own PyTorch implementation gets random
weights (matrices ~ N(0, 1/fan_in), norm weights 1 ± 0.2, biases ~ N(0, 0.2²), so logits are
O(1) and every parameter matters), is saved with ``save_pretrained`` (``config.json`` +
``model.safetensors``, float32), and runs on a fixed left-padded batch in float32 with eager
attention. Saved next to the checkpoint: ``input_ids.npy`` (B, T) int32,
``attention_mask.npy`` (B, T) bool and ``logits.npy`` (B, T, V) float32, zero at padding.
Position ids are passed as ``cumsum(mask) - 1``, the convention of generation (and of
:func:`eggroll.models.llm.forward`).

Variants: ``qwen2`` (2 layers, hidden 64, 4 query / 2 key-value heads, q/k/v biases, untied),
``llama`` (tied embeddings, attention_bias=true, Llama-3 rope scaling) and ``mistral`` (one
key-value head, sliding window 3). The tests read the fixtures with eggroll's own loader and
need neither torch nor transformers. When eggroll imports here the script also prints our
maximum logit difference, and checks that a folder written by ``eggroll.models.hf.save``
loads in ``transformers`` with the same logits.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "models" / "fixtures"
# Small shapes of each family; the settings that set a family apart come last on each line.
VARIANTS = {
    "qwen2": dict(
        cls="Qwen2", vocab_size=128, hidden_size=64, intermediate_size=96,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        tie_word_embeddings=False, rope_theta=10000.0, rms_norm_eps=1e-6,
    ),
    "llama": dict(
        cls="Llama", vocab_size=128, hidden_size=64, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        tie_word_embeddings=True, attention_bias=True, rms_norm_eps=1e-5, rope_theta=500.0,
        rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
        },
    ),
    "mistral": dict(
        cls="Mistral", vocab_size=96, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
        tie_word_embeddings=False, sliding_window=3, rope_theta=10000.0,
    ),
}  # fmt: skip
SEQ = 10
PAD = 3  # row 1 is left-padded by this many tokens


def _inputs(vocab: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1, vocab, size=(2, SEQ)).astype(np.int32)
    mask = np.ones((2, SEQ), bool)
    mask[1, :PAD] = False
    ids[1, :PAD] = 0
    return ids, mask


def _randomise(model, torch) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.normal_(0.0, 1.0 / np.sqrt(p.shape[1]))
            elif name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.2)


def _reference_logits(model, torch, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            position_ids=torch.tensor(positions, dtype=torch.long),
        )
    return np.where(mask[..., None], out.logits.float().numpy(), 0.0).astype(np.float32)


def make(name: str, spec: dict, torch, transformers) -> Path:
    spec = dict(spec)
    cls = spec.pop("cls")
    config = getattr(transformers, f"{cls}Config")(**spec, attn_implementation="eager")
    torch.manual_seed(sum(map(ord, name)))
    model = getattr(transformers, f"{cls}ForCausalLM")(config).float().eval()
    _randomise(model, torch)
    folder = FIXTURES / name
    if folder.exists():
        shutil.rmtree(folder)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        folder.mkdir(parents=True)
        for keep in ("config.json", "model.safetensors"):
            shutil.copy(Path(tmp) / keep, folder / keep)
    ids, mask = _inputs(spec["vocab_size"])
    logits = _reference_logits(model, torch, ids, mask)
    np.save(folder / "input_ids.npy", ids)
    np.save(folder / "attention_mask.npy", mask)
    np.save(folder / "logits.npy", logits)
    size = sum(p.stat().st_size for p in folder.iterdir())
    print(f"{name}: wrote {folder} ({size / 1024:.0f} KiB)")
    _check_ours(folder, model, torch, transformers, ids, mask, logits)
    return folder


def _check_ours(folder, model, torch, transformers, ids, mask, logits) -> None:
    try:
        import jax

        from eggroll.models import hf, llm
    except ImportError as err:
        print(f"  (eggroll not importable, skipped our side: {err})")
        return
    jax.config.update("jax_platforms", "cpu")
    params, config = hf.load(folder)
    ours, _ = llm.forward(params, config, ids, mask)
    err = float(np.max(np.abs(np.where(mask[..., None], np.asarray(ours), 0.0) - logits)))
    print(f"  eggroll vs transformers: max |Δlogit| = {err:.3g}")
    with tempfile.TemporaryDirectory() as tmp:
        hf.save(tmp, params, config)
        again = transformers.AutoModelForCausalLM.from_pretrained(
            tmp, attn_implementation="eager", dtype=torch.float32
        ).eval()
        reloaded = _reference_logits(again, torch, ids, mask)
        json.loads((Path(tmp) / "config.json").read_text())
    print(
        "  folder saved by eggroll, loaded by transformers: max |Δlogit| = "
        f"{float(np.max(np.abs(reloaded - logits))):.3g}"
    )


def main() -> None:
    try:
        import torch
        import transformers
    except ImportError:
        sys.exit("this script needs torch and transformers: pip install torch transformers")
    names = sys.argv[1:] or list(VARIANTS)
    for name in names:
        make(name, VARIANTS[name], torch, transformers)


if __name__ == "__main__":
    main()
