"""Backprop pretraining of the tiny byte-level LLM (Llama-style, eggroll.models.llm).

    python scripts/llm_pretrain.py                       # CPU default: stdlib corpus
    python scripts/llm_pretrain.py --data notes.txt --steps 1000 --run-dir runs/tiny
    python scripts/llm_pretrain.py --init-from runs/tiny/model --data tasks/ --steps 200

Trains with optax AdamW (warmup + cosine decay, gradient clipping) on random byte windows of
the corpus, prints the corpus baselines and a progress bar, validates on the validation split
(bits/byte), and writes into the run folder ``metrics.jsonl``, ``summary.json`` and ``model/``:
a Hugging Face folder (``config.json``, ``model.safetensors``, ``tokenizer.json``) that
``eggroll.models.hf.load`` and ``transformers`` read, written file by file atomically. The
training loop itself is ``eggroll.models.lm_train.train_lm``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import optax
from common import JsonlLog, arg, config_dict, parse_config, write_summary
from tqdm import tqdm

from eggroll.data import text
from eggroll.models import hf, llm, lm_train
from eggroll.models import tokenizer as tokenizer_lib

MODEL_DIR = "model"


@dataclasses.dataclass(frozen=True)
class LMPretrainConfig:
    data: str = arg("stdlib", "'stdlib', a text file, a folder, or hf:NAME")
    run_dir: str = arg("", "run folder (default: runs/llm-pretrain-<date>-<time>)")
    init_from: str = arg("", "start from this model folder instead of a random model")
    hidden: int = arg(128, "model width")
    layers: int = arg(4, "decoder blocks")
    heads: int = arg(4, "query heads")
    kv_heads: int = arg(2, "key/value heads (grouped-query attention)")
    intermediate: int = arg(384, "SwiGLU hidden size")
    compute_dtype: str = arg("float32", "activations/matmuls dtype (params stay float32)")
    seq_len: int = arg(128, "tokens per training window")
    batch_size: int = arg(16, "windows per step")
    steps: int = arg(300, "optimiser steps")
    lr: float = arg(3e-3, "peak learning rate")
    warmup: int = arg(20, "linear warmup steps")
    weight_decay: float = arg(0.01, "AdamW weight decay (matrices only)")
    clip: float = arg(1.0, "global gradient norm clip (0: none)")
    valid_every: int = arg(100, "steps between validations")
    valid_batches: int = arg(8, "validation batches (of --batch-size windows)")
    log_every: int = arg(10, "steps between metrics lines")
    seed: int = arg(0, "seed for parameters and data")
    progress: bool = arg(True, "show a progress bar")

    def __post_init__(self):
        for name in (
            "hidden",
            "layers",
            "heads",
            "kv_heads",
            "intermediate",
            "seq_len",
            "batch_size",
            "steps",
            "valid_every",
            "valid_batches",
            "log_every",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1")
        if self.warmup < 0 or self.lr <= 0 or self.weight_decay < 0 or self.clip < 0:
            raise ValueError("--lr must be > 0; --warmup, --weight-decay, --clip ≥ 0")
        if self.compute_dtype not in llm.COMPUTE_DTYPES:
            raise ValueError(f"--compute-dtype must be one of {llm.COMPUTE_DTYPES}")
        if not self.init_from:
            self.model_config()  # shape errors (heads vs kv-heads, ...) at parse time

    def model_config(self) -> llm.LLMConfig:
        return llm.tiny_byte_config(
            hidden_size=self.hidden,
            num_layers=self.layers,
            num_heads=self.heads,
            num_kv_heads=self.kv_heads,
            intermediate_size=self.intermediate,
            compute_dtype=self.compute_dtype,
        )


def make_optimizer(cfg: LMPretrainConfig) -> optax.GradientTransformation:
    """AdamW with warmup + cosine decay to 10 %; no weight decay on norms and biases."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.lr, max(cfg.warmup, 1), max(cfg.steps, cfg.warmup + 1), cfg.lr * 0.1
    )

    def decay_mask(params):  # matrices only: norms and biases (even stacked) are not decayed
        return jax.tree_util.tree_map_with_path(
            lambda path, _: path[-1].key in llm.MATRIX_LEAVES, params
        )

    adamw = optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=decay_mask)
    return optax.chain(optax.clip_by_global_norm(cfg.clip), adamw) if cfg.clip else adamw


def run(cfg: LMPretrainConfig) -> dict[str, Any]:
    """Train and save one model; returns the summary dict."""
    run_dir = Path(cfg.run_dir or time.strftime("runs/llm-pretrain-%Y%m%d-%H%M%S"))
    model_dir = run_dir / MODEL_DIR
    if (model_dir / hf.CONFIG_FILE).exists():
        raise SystemExit(
            f"{model_dir} already holds a model: choose another --run-dir, or continue from it "
            f"with --init-from {model_dir} --run-dir NEW"
        )
    say = tqdm.write if cfg.progress else print
    if cfg.init_from:
        params, config = hf.load(cfg.init_from, cfg.compute_dtype)
        tokenizer = hf.load_tokenizer(cfg.init_from, config)
        source = cfg.init_from
    else:
        config = cfg.model_config()
        params = llm.init_params(jax.random.key(cfg.seed), config)
        tokenizer = tokenizer_lib.byte_level()
        source = "random init"
    corpus = text.load_corpus(None if cfg.data == "stdlib" else cfg.data)
    base = text.baselines(corpus)
    run_dir.mkdir(parents=True, exist_ok=True)
    say(
        f"corpus {corpus.name}: {len(corpus.train):,} train / {len(corpus.valid):,} valid bytes; "
        + ", ".join(f"{k} {v:.3f}" for k, v in base.items())
        + " bits/byte (validation)"
    )
    say(f"model: {llm.count_params(params):,} parameters ({source}), {config.compute_dtype}")

    def validate(p) -> float:
        batches = lm_train.evaluation_batches(
            corpus.valid, cfg.batch_size, cfg.seq_len, cfg.valid_batches
        )
        return lm_train.evaluate_loss(p, config, batches) / math.log(2)

    log = JsonlLog(run_dir / "metrics.jsonl")
    log.path.unlink(missing_ok=True)
    bar = tqdm(total=cfg.steps, disable=not cfg.progress, unit="step", dynamic_ncols=True)
    timing = {"compiled_at": None, "seconds": 0.0, "steps": 0}  # training only, no compile
    last_valid = [float("nan")]
    optimizer = make_optimizer(cfg)

    def callback(step: int, loss) -> None:
        if timing["compiled_at"] is None:  # step 1 compiles; time from its end
            jax.block_until_ready(loss)
            timing["compiled_at"] = time.perf_counter()
        if step % cfg.log_every == 0 or step == cfg.steps:
            bits = float(loss) / math.log(2)
            tokens = step * cfg.batch_size * cfg.seq_len
            log.write({"step": step, "tokens": tokens, "train_bits_per_byte": bits})
            bar.set_postfix_str(f"train {bits:.3f} valid {last_valid[0]:.3f} bits/byte")
        bar.update(1)

    train_steps, done = cfg.steps, 0
    batches = lm_train.byte_batches(corpus.train, cfg.batch_size, cfg.seq_len, cfg.seed)
    opt_state = None
    while done < train_steps:  # train in segments between validations
        segment = min(cfg.valid_every - done % cfg.valid_every, train_steps - done)
        first = timing["compiled_at"] is None
        started = time.perf_counter()
        result = lm_train.train_lm(
            params,
            config,
            batches,
            optimizer,
            segment,
            opt_state=opt_state,
            callback=lambda s, loss, base=done: callback(base + s, loss),
        )
        params, opt_state, done = result.params, result.opt_state, done + segment
        jax.block_until_ready(params)
        timing["seconds"] += time.perf_counter() - (timing["compiled_at"] if first else started)
        timing["steps"] += segment - 1 if first else segment
        last_valid[0] = validate(params)
        log.write({"step": done, "valid_bits_per_byte": last_valid[0]})
    bar.close()
    train_seconds, timed = timing["seconds"], timing["steps"]
    hf.save(model_dir, params, config, tokenizer)
    records = [json.loads(line) for line in log.path.read_text().splitlines()]
    recent = [r["train_bits_per_byte"] for r in records if "train_bits_per_byte" in r][-5:]
    return {
        "valid_bits_per_byte": round(last_valid[0], 4),
        "train_bits_per_byte": round(sum(recent) / len(recent), 4) if recent else None,
        "baselines": {k: round(v, 4) for k, v in base.items()},
        "tokens_per_second": round(timed * cfg.batch_size * cfg.seq_len / train_seconds, 1)
        if timed and train_seconds
        else None,
        "steps": cfg.steps,
        "parameters": llm.count_params(params),
        "corpus": corpus.name,
        "run_dir": str(run_dir),
        "model_dir": str(model_dir),
        "config": config_dict(cfg),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    cfg = parse_config(LMPretrainConfig, argv, __doc__.splitlines()[0])
    summary = run(cfg)
    summary["wall_seconds"] = round(time.perf_counter() - started, 2)
    print(write_summary(Path(summary["run_dir"]), summary), flush=True)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
