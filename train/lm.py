"""Backprop pretraining of the tiny byte-level LLM (Llama-style), the baseline LM trainer.

    from eggroll.train import lm
    summary = lm.run(lm.Config(steps=300))        # or: eggroll lm, scripts/llm_pretrain.py

Trains with optax AdamW (warmup + cosine decay, gradient clipping) on random byte windows of
the corpus, prints the corpus baselines and a progress bar, validates on the validation split
(bits/byte), and writes into the run folder ``metrics.jsonl``, ``summary.json`` and ``model/``:
a Hugging Face folder (``config.json``, ``model.safetensors``, ``tokenizer.json``) that
``eggroll.models.hf.load`` and ``transformers`` read, written file by file atomically. The
optimiser step is ``eggroll.models.lm_train.make_backprop_step``; the run loop is the shared
``eggroll.train.loop`` (checkpoints and ``--resume`` included).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from eggroll import distributed
from eggroll.data import text
from eggroll.models import hf, llm, lm_train
from eggroll.models import tokenizer as tokenizer_lib
from eggroll.train import loop
from eggroll.train.config import RunOptions, arg, check_finite, check_positive

MODEL_DIR = "model"
MULTI_PROCESS = False  # backprop on one process: the command takes no cluster flags


@dataclasses.dataclass(frozen=True)
class Config(RunOptions):
    """Backprop LM pretraining; every field is a flag of ``eggroll lm``."""

    # data
    data: str = arg("stdlib", "'stdlib', a text file, a folder, or hf:NAME")
    # the model
    init_from: str = arg("", "start from this model folder instead of a random model")
    hidden: int = arg(128, "model width")
    layers: int = arg(4, "decoder blocks")
    heads: int = arg(4, "query heads")
    kv_heads: int = arg(2, "key/value heads (grouped-query attention)")
    intermediate: int = arg(384, "SwiGLU hidden size")
    compute_dtype: str = arg("float32", "activations/matmuls dtype (params stay float32)")
    # optimisation
    seq_len: int = arg(128, "tokens per training window")
    batch_size: int = arg(16, "windows per step")
    steps: int = arg(300, "optimiser steps")
    lr: float = arg(3e-3, "peak learning rate")
    warmup: int = arg(20, "linear warmup steps")
    weight_decay: float = arg(0.01, "AdamW weight decay (matrices only)")
    clip: float = arg(1.0, "global gradient norm clip (0: none)")
    # validation and logging
    valid_every: int = arg(100, "steps between validations")
    valid_batches: int = arg(8, "validation batches (of --batch-size windows)")
    log_every: int = arg(10, "steps between metrics lines")

    def __post_init__(self):
        check_finite(self)
        positive = "hidden layers heads kv_heads intermediate seq_len batch_size steps"
        check_positive(self, (positive + " valid_every valid_batches log_every").split())
        check_positive(self, ["checkpoint_every"])
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


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
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


class Trainer(loop.Trainer):
    """The :class:`eggroll.train.loop.Trainer` of backprop LM pretraining."""

    finite_metrics = ("train_bits_per_byte",)

    def __init__(self, config: Config, corpus: text.Corpus, say=print):
        self.config, self.corpus = config, corpus
        if config.init_from:
            params, self.model = hf.load(config.init_from, config.compute_dtype)
            self.tokenizer = hf.load_tokenizer(config.init_from, self.model)
            source = config.init_from
        else:
            self.model = config.model_config()
            params = llm.init_params(jax.random.key(config.seed), self.model)
            self.tokenizer = tokenizer_lib.byte_level()
            source = "random init"
        say(
            f"model: {llm.count_params(params):,} parameters ({source}), {self.model.compute_dtype}"
        )
        self.optimizer = make_optimizer(config)
        self.state = {"params": params, "opt_state": self.optimizer.init(params)}
        self.train_step = lm_train.make_backprop_step(self.model, self.optimizer)
        self.rng = np.random.default_rng(config.seed)
        lm_train.byte_window_batch(corpus.train, 1, config.seq_len, np.random.default_rng(0))
        self.fingerprint = {
            "data": config.data,
            "init_from": config.init_from,
            "seq_len": config.seq_len,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "steps": config.steps,
            "seed": config.seed,
        }

    def arrays(self):
        return self.state

    def restore(self, arrays, host):
        self.state = arrays
        self.rng.bit_generator.state = json.loads(host["rng"])

    def host_state(self):
        return {"rng": json.dumps(self.rng.bit_generator.state)}  # 128-bit ints as text

    def step(self, index):
        cfg = self.config
        tokens = lm_train.byte_window_batch(
            self.corpus.train, cfg.batch_size, cfg.seq_len, self.rng
        )
        mask = np.ones((cfg.batch_size, cfg.seq_len), bool)
        params, opt_state, loss = self.train_step(
            self.state["params"], self.state["opt_state"], tokens, mask
        )
        self.state = {"params": params, "opt_state": opt_state}
        return {"train_bits_per_byte": loss / math.log(2)}, {"tokens": cfg.batch_size * cfg.seq_len}

    def evaluate(self, step, final):
        cfg = self.config
        batches = lm_train.evaluation_batches(
            self.corpus.valid, cfg.batch_size, cfg.seq_len, cfg.valid_batches
        )
        loss = lm_train.evaluate_loss(self.state["params"], self.model, batches)
        return {"valid_bits_per_byte": loss / math.log(2)}

    def describe(self, record, evaluation):
        valid = (evaluation or {}).get("valid_bits_per_byte", float("nan"))
        return f"train {record['train_bits_per_byte']:.3f} valid {valid:.3f} bits/byte"

    def summary(self, result: loop.LoopResult) -> dict[str, Any]:
        cfg = self.config
        model_dir = result.run_dir / MODEL_DIR
        if distributed.is_main_process():
            hf.save(model_dir, self.state["params"], self.model, self.tokenizer)
        recent = [r["train_bits_per_byte"] for r in result.records if "train_bits_per_byte" in r]
        recent = [v for v in recent[-5:] if v is not None]
        return {
            "valid_bits_per_byte": round(result.evaluations["final"]["valid_bits_per_byte"], 4),
            "train_bits_per_byte": round(float(np.mean(recent)), 4) if recent else None,
            "baselines": {k: round(v, 4) for k, v in text.baselines(self.corpus).items()},
            "tokens_per_second": round(cfg.batch_size * cfg.seq_len * result.steps_per_second, 1),
            "parameters": llm.count_params(self.state["params"]),
            "corpus": self.corpus.name,
            "model_dir": str(model_dir),
        }


def run(config: Config, callbacks: Iterable[Any] = (), say=print) -> dict[str, Any]:
    """Train and save one model (a Hugging Face folder ``run_dir/model``); returns the
    summary (also ``summary.json``)."""
    run_dir = Path(config.run_dir or time.strftime("runs/llm-pretrain-%Y%m%d-%H%M%S"))
    loop.check_run_dir(run_dir, config.resume)
    if (run_dir / MODEL_DIR / hf.CONFIG_FILE).exists() and not config.resume:
        raise ValueError(
            f"{run_dir / MODEL_DIR} already holds a model: choose another --run-dir, or continue "
            f"from it with --init-from {run_dir / MODEL_DIR} --run-dir NEW"
        )
    corpus = text.load_corpus(None if config.data == "stdlib" else config.data)
    say(f"corpus {corpus.name}: {len(corpus.train):,} train / {len(corpus.valid):,} valid bytes")
    trainer = Trainer(config, corpus, say)
    return loop.run_loop(
        trainer,
        run_dir=run_dir,
        budget=loop.Budget(steps=config.steps),
        log_every=config.log_every,
        eval_every=config.valid_every,
        callbacks=callbacks,
        **config.loop_options(),
    )
