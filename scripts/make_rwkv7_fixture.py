"""Make the RWKV-7 parity fixtures: tiny random ``.pth`` checkpoints + the reference's outputs.

    pip install torch rwkv                # only for this script; not eggroll dependencies
    python scripts/make_rwkv7_fixture.py  # writes tests/models/fixtures/rwkv7_*/

The reference is BlinkDL's ``rwkv`` package (``RWKV_x070``, strategy ``cpu fp32``). For each
variant a random state dict in the official ``.pth`` layout (names and shapes of the released
RWKV-7 checkpoints; matrices ~ N(0, 1/fan_in), norm weights 1 ± 0.2, mixing coefficients
U(0, 1), so logits are O(1) and every tensor matters) is saved with ``torch.save``, loaded by
the reference, and run on two prompts, one by one: the prompt in one call (``full_output``),
then 16 greedy steps (``forward`` of one token). The ``.pth`` goes through eggroll's converter
(:mod:`eggroll.models.rwkv_convert`, ``torch.load(weights_only=True)``) into the fixture folder
(``config.json`` + ``model.safetensors``), next to:

* ``prompt.npy`` (2, P) int32 left-padded (row 1 by ``PAD`` tokens), ``mask.npy`` (2, P) bool;
* ``prompt_logits.npy`` (2, P, V) float32, zero at padding;
* ``tokens.npy`` (2, 17): the reference's greedy continuation (argmax of the last prompt
  logits, then of each step's logits); ``step_logits.npy`` (2, 16, V): the logits after
  feeding ``tokens[:, i]``;
* ``state_att.npy``, ``state_ffn.npy`` (L, 2, C) and ``state_wkv.npy`` (L, 2, H, N, N): the
  reference state after the prompt.

Variants: ``rwkv7_a`` (vocabulary 97, width 32, 2 heads of 16, 2 layers, FFN 96) and
``rwkv7_b`` (vocabulary 131, width 48, 6 heads of 8, 3 layers, FFN 160, other LoRA widths,
layer 0's unused ``v0/v1/v2`` left out as the converter allows).

It also writes ``rwkv7_vocab/``: the texts of the tokenizer test, the ids the ``rwkv``
package's ``TRIE_TOKENIZER`` gives them with the full World vocabulary, and ``vocab.txt``,
the lines of that vocabulary whose token occurs somewhere in the texts (plus every single
byte). Greedy longest match over that subset gives the same ids on these texts (every token
that could match at any position is kept), so the test needs neither the package nor its 1 MB
file. When eggroll imports here the script prints our maximum differences.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "models" / "fixtures"
VARIANTS = {
    "rwkv7_a": dict(vocab=97, width=32, head=16, layers=2, ffn=96, lora=(8, 8, 8, 16),
                    layer0_v=True),
    "rwkv7_b": dict(vocab=131, width=48, head=8, layers=3, ffn=160, lora=(16, 8, 12, 24),
                    layer0_v=False),
}  # fmt: skip
PROMPT = 9
PAD = 3  # row 1 is left-padded by this many tokens
STEPS = 16
TEXTS = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "  leading spaces\tand tabs\nand\r\nnewlines\n\n\n",
    "Ünïcödé: café, naïve, Zürich — “quotes” and ‘apostrophes’ … ©®™",
    "中文文本：我们今天去公园散步。日本語のテキストも。한국어 텍스트.",
    "Emoji 🦆🚀👩‍💻 and symbols ∑∫√∞ ≤ ≥ ≠ and Ελληνικά, русский текст.",
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n"
    "    return fib(n - 1) + fib(n - 2)\n",
    '{"key": [1, 2.5, -3e10], "nested": {"a": null, "b": true}}',
    'for (int i = 0; i < 10; ++i) { printf("%d\\n", i); }  // C code',
    "12 + 34 = 46. 1234567890 * 987654321 = ?",
    "",
    "\x00\x01\x7f control bytes and ~!@#$%^&*()_+`-=[]{}|;':\",./<>?",
]


def _random_state_dict(spec: dict, torch, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    C, N, L, F, V = spec["width"], spec["head"], spec["layers"], spec["ffn"], spec["vocab"]
    H = C // N
    dw, da, dv, dg = spec["lora"]

    def normal(*shape, std=1.0, mean=0.0):
        return mean + std * torch.randn(*shape, generator=g)

    def uniform(*shape, lo=0.0, hi=1.0):
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    def mat(out_dim, in_dim):  # (out, in) as a PyTorch Linear
        return normal(out_dim, in_dim, std=in_dim**-0.5)

    sd = {"emb.weight": normal(V, C)}
    for i in range(L):
        b = f"blocks.{i}."
        if i == 0:
            sd[b + "ln0.weight"], sd[b + "ln0.bias"] = (
                normal(C, std=0.2, mean=1),
                normal(C, std=0.1),
            )
        for ln in ("ln1", "ln2"):
            sd[b + ln + ".weight"], sd[b + ln + ".bias"] = (
                normal(C, std=0.2, mean=1),
                normal(C, std=0.1),
            )
        att = b + "att."
        for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            sd[att + n] = uniform(1, 1, C)
        for prefix, d in (("w", dw), ("a", da), ("v", dv), ("g", dg)):
            if prefix == "v" and i == 0 and not spec["layer0_v"]:
                continue
            if prefix != "g":
                sd[att + prefix + "0"] = normal(1, 1, C)
            sd[att + prefix + "1"] = normal(C, d, std=C**-0.5)
            sd[att + prefix + "2"] = normal(d, C, std=d**-0.5)
        sd[att + "k_k"] = uniform(1, 1, C, lo=0.5, hi=1.5)
        sd[att + "k_a"] = uniform(1, 1, C)
        sd[att + "r_k"] = normal(H, N, std=0.5)
        for n in ("receptance", "key", "value", "output"):
            sd[att + n + ".weight"] = mat(C, C)
        sd[att + "ln_x.weight"], sd[att + "ln_x.bias"] = (
            normal(C, std=0.2, mean=1),
            normal(C, std=0.1),
        )
        sd[b + "ffn.x_k"] = uniform(1, 1, C)
        sd[b + "ffn.key.weight"] = mat(F, C)
        sd[b + "ffn.value.weight"] = mat(C, F)
    sd["ln_out.weight"], sd["ln_out.bias"] = normal(C, std=0.2, mean=1), normal(C, std=0.1)
    sd["head.weight"] = mat(V, C)
    return {k: v.float().contiguous() for k, v in sd.items()}


def _inputs(vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(2, PROMPT)).astype(np.int32)
    mask = np.ones((2, PROMPT), bool)
    mask[1, :PAD] = False
    ids[1, :PAD] = 0
    return ids, mask


def _margin(logits: np.ndarray) -> float:
    top = np.sort(logits, axis=-1)
    return float(np.min(top[..., -1] - top[..., -2]))


def _run_reference(model, torch, prompt: list[int]):
    """Prompt logits (P, V), the state after it, greedy tokens (17,), step logits (16, V)."""
    logits, state = model.forward(list(prompt), None, full_output=True)
    if len(prompt) == 1:
        logits = logits[None]
    saved = [s.clone() for s in state]
    tokens = [int(torch.argmax(logits[-1]))]
    steps = []
    for _ in range(STEPS):
        out, state = model.forward(tokens[-1], state)
        steps.append(out.float().numpy().copy())
        tokens.append(int(np.argmax(steps[-1])))
    return logits.float().numpy(), saved, np.array(tokens, np.int32), np.stack(steps)


def make(name: str, spec: dict, torch, reference_cls) -> Path:
    from eggroll.models import rwkv_convert

    seed = sum(map(ord, name))
    for attempt in range(20):  # reseed until every greedy choice has a clear margin
        sd = _random_state_dict(spec, torch, seed + 1000 * attempt)
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(sd, Path(tmp) / "model.pth")
            model = reference_cls(str(Path(tmp) / "model"), "cpu fp32")
        ids, mask = _inputs(spec["vocab"], seed + attempt)
        rows = [_run_reference(model, torch, ids[b][mask[b]].tolist()) for b in range(2)]
        margins = [min(_margin(r[0][-1]), _margin(r[3])) for r in rows]
        if min(margins) > 1e-3:
            break
    else:
        raise RuntimeError(f"{name}: no seed with clear greedy margins")
    folder = FIXTURES / name
    if folder.exists():
        shutil.rmtree(folder)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(sd, Path(tmp) / "model.pth")
        tensors = rwkv_convert.load_pth(Path(tmp) / "model.pth")
        rwkv_convert.convert_tensors(tensors, folder)
    P, V, L = PROMPT, spec["vocab"], spec["layers"]
    prompt_logits = np.zeros((2, P, V), np.float32)
    att, wkv, ffn = [], [], []
    for b, (logits, state, _, _) in enumerate(rows):
        prompt_logits[b, mask[b]] = logits
        att.append(np.stack([state[3 * i].numpy() for i in range(L)]))
        wkv.append(np.stack([state[3 * i + 1].numpy() for i in range(L)]))
        ffn.append(np.stack([state[3 * i + 2].numpy() for i in range(L)]))
    np.save(folder / "prompt.npy", ids)
    np.save(folder / "mask.npy", mask)
    np.save(folder / "prompt_logits.npy", prompt_logits)
    np.save(folder / "tokens.npy", np.stack([r[2] for r in rows]))
    np.save(folder / "step_logits.npy", np.stack([r[3] for r in rows]).astype(np.float32))
    np.save(folder / "state_att.npy", np.stack(att, 1).astype(np.float32))
    np.save(folder / "state_wkv.npy", np.stack(wkv, 1).astype(np.float32))
    np.save(folder / "state_ffn.npy", np.stack(ffn, 1).astype(np.float32))
    size = sum(p.stat().st_size for p in folder.iterdir())
    print(f"{name}: wrote {folder} ({size / 1024:.0f} KiB), greedy margin {min(margins):.3g}")
    _check_ours(folder)
    return folder


def _check_ours(folder: Path) -> None:
    import jax

    from eggroll.models import rwkv7

    jax.config.update("jax_platforms", "cpu")
    params, config = rwkv7.load(folder)
    ids, mask = np.load(folder / "prompt.npy"), np.load(folder / "mask.npy")
    logits, state = rwkv7.forward(params, config, ids, mask)
    err = np.max(
        np.abs(
            np.where(mask[..., None], np.asarray(logits), 0) - np.load(folder / "prompt_logits.npy")
        )
    )
    tokens = np.load(folder / "tokens.npy")
    steps = []
    for i in range(STEPS):
        out, state = rwkv7.step(params, config, tokens[:, i], state)
        steps.append(np.asarray(out))
    step_err = np.max(np.abs(np.stack(steps, 1) - np.load(folder / "step_logits.npy")))
    print(f"  eggroll vs rwkv: max |Δlogit| prompt {err:.3g}, {STEPS} steps {step_err:.3g}")


def make_vocab_fixture() -> Path:
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    from eggroll.models import rwkv_tokenizer

    source = rwkv_tokenizer.package_vocab()
    reference = TRIE_TOKENIZER(str(source))
    lines = source.read_text("utf-8").splitlines()
    by_id = {int(line[: line.index(" ")]): line for line in lines}
    keep = set(range(1, 257))  # the single bytes
    for text in TEXTS:
        data = text.encode("utf-8")
        for i in range(len(data)):
            for j in range(i + 1, min(len(data), i + 128) + 1):
                token_id = reference.token2idx.get(data[i:j])
                if token_id is not None:
                    keep.add(token_id)
    folder = FIXTURES / "rwkv7_vocab"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(by_id[i] for i in sorted(keep)) + "\n", "utf-8")
    ids = [reference.encode(text) for text in TEXTS]
    (folder / "texts.json").write_text(json.dumps({"texts": TEXTS, "ids": ids}, indent=1) + "\n")
    ours = rwkv_tokenizer.WorldTokenizer.from_file(folder / "vocab.txt")
    full = rwkv_tokenizer.WorldTokenizer.from_file(source)
    agree = all(ours.encode(t) == full.encode(t) == r for t, r in zip(TEXTS, ids, strict=True))
    print(f"rwkv7_vocab: {len(keep)} of {len(by_id)} tokens kept; ids agree: {agree}")
    return folder


def main() -> None:
    os.environ["RWKV_V7_ON"] = "1"
    os.environ.setdefault("RWKV_JIT_ON", "1")
    os.environ["RWKV_CUDA_ON"] = "0"
    try:
        import torch
        from rwkv.model import RWKV_x070
    except ImportError:
        sys.exit("this script needs torch and rwkv: pip install torch rwkv")
    torch.set_num_threads(1)
    names = sys.argv[1:] or [*VARIANTS, "rwkv7_vocab"]
    for name in names:
        if name == "rwkv7_vocab":
            make_vocab_fixture()
        else:
            make(name, VARIANTS[name], torch, RWKV_x070)


if __name__ == "__main__":
    main()
