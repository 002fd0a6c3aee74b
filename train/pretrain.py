"""Integer-only ES pretraining of the EGG byte language model (the paper's EGG; the main job).

    from eggroll.train import pretrain
    summary = pretrain.run(pretrain.Config(steps=200, width=32))

Every member is the int8 EGG model with its own low-rank int8 perturbation; ``group_size``
members (antithetic pairs) read the same byte stream, and each member carries its recurrent
state from one step to the next. The fitness is minus the member's integer cross-entropy;
pairs are compared by sign and weights move by ±1 (:class:`eggroll.integer.IntEGGROLL`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from eggroll import distributed, integer
from eggroll.data import text
from eggroll.intmath import BITS_SCALE
from eggroll.models import egglm
from eggroll.train import loop
from eggroll.train.config import (
    RunOptions,
    arg,
    check_choice,
    check_finite,
    check_positive,
    flag,
)

CPU_MEMBER_SLICE = 32  # members per slice on a CPU: a slice's activations stay in cache
PRESETS = ("demo", "paper")


def preset(name: str) -> dict[str, Any]:
    """The settings of a named preset on this backend (flags given with it override them).

    ``demo``: the defaults, the 3-minute CPU run. ``paper``: the paper's EGG, 6 layers × 256,
    100 tokens per member, σ = 2^-4, α_t = 1 / (0.015 t + 1) without error feedback, members
    in antithetic pairs per stream; the population is 2^14 per accelerator (one vmap over the
    local members) and 512 on a CPU (cache-sized slices).
    """
    if name not in PRESETS:
        raise ValueError(f"--preset must be one of {list(PRESETS)}, got {name!r}")
    if name == "demo":
        return {}
    accelerators = jax.device_count() if jax.default_backend() != "cpu" else 0
    return {
        "width": 256,
        "layers": 6,
        "seq_len": 100,
        "sigma_shift": 4,
        "alpha": 1.0,
        "alpha_decay": 0.015,
        "alpha_power": 1.0,
        "error_feedback": False,
        "group_size": 2,
        "population": (1 << 14) * accelerators if accelerators else 512,
        "member_batch": -1,
    }


@dataclasses.dataclass(frozen=True)
class Config(RunOptions):
    """Integer EGG pretraining; every field is a command-line flag of ``eggroll pretrain``."""

    checkpoint_every: int = arg(400, "generations between checkpoints (and at the end)")

    # data and model
    data: str = arg("stdlib", "'stdlib', a text file, a folder, or hf:NAME")
    width: int = arg(64, "model width d")
    layers: int = arg(2, "number of blocks")
    # the population: members, streams, perturbations
    population: int = arg(512, "population size N (a multiple of --group-size)")
    group_size: int = arg(2, "members sharing one data stream (even: antithetic pairs)")
    seq_len: int = arg(100, "tokens per member per step")
    rank: int = arg(1, "rank of each member's perturbation")
    sigma_shift: int = arg(4, "perturbation scale σ = 2^-sigma_shift")
    # the integer update rule (a Z-test threshold moving a fraction α of weights)
    alpha: float = arg(1.0, "initial fraction of weights moved by chance per step")
    alpha_decay: float = arg(0.005, "alpha_t = alpha / (alpha_decay * t + 1) ** alpha_power")
    alpha_power: float = arg(1.0, "exponent of the alpha schedule")
    noise_reuse: int = arg(1, "generations that share one noise draw")
    error_feedback: bool = arg(True, "keep sub-threshold scores for later steps")
    # evaluation of the members
    member_batch: int = arg(
        -1,
        "members evaluated at once, slices in a loop (keeps activations in cache); 0: all "
        "in one vmap; -1: by backend (32 on CPU, all on GPU/TPU)",
    )
    noise: str = arg("table", "int8 noise source: 'table' (seed-made int8 table) or 'keys'")
    # budget
    steps: int = arg(2000, "training steps (generations)")
    minutes: float = arg(0.0, "stop after this many minutes of training (0: no limit)")
    # validation
    valid_every: int = arg(200, "steps between validations")
    valid_bytes: int = arg(1 << 17, "validation bytes for periodic checks")
    final_valid_bytes: int = arg(1 << 20, "validation bytes for the final number (0: all)")
    valid_streams: int = arg(64, "parallel streams for validation")
    # logging
    log_every: int = arg(10, "steps between progress/metrics updates")

    def __post_init__(self):
        check_finite(self)
        positive = "width layers population group_size seq_len rank steps valid_every valid_bytes"
        check_positive(self, (positive + " valid_streams log_every noise_reuse").split())
        check_positive(self, ["checkpoint_every"])
        if self.group_size % 2:
            raise ValueError("--group-size must be even (antithetic pairs share a stream)")
        if self.population % self.group_size:
            raise ValueError(
                f"--population {self.population} is not a multiple of --group-size "
                f"{self.group_size}"
            )
        for name in ("minutes", "final_valid_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{flag(name)} must be ≥ 0, got {getattr(self, name)}")
        if self.member_batch < -1:
            raise ValueError(f"--member-batch must be ≥ -1, got {self.member_batch}")
        check_choice("noise", self.noise, ("keys", "table"))

    @property
    def streams(self) -> int:
        return self.population // self.group_size

    @property
    def member_slice(self) -> int:
        """Members per evaluation slice (``0``: one vmap over all), ``-1`` resolved for the
        backend: cache-sized slices on a CPU, one vmap over the local members elsewhere."""
        if self.member_batch >= 0:
            return self.member_batch
        return CPU_MEMBER_SLICE if jax.default_backend() == "cpu" else 0

    @classmethod
    def from_preset(cls, name: str, **changes: Any) -> Config:
        """A config from a named preset (:func:`preset`), with ``changes`` on top."""
        return cls(**{**preset(name), **changes})

    @property
    def model(self) -> egglm.EggConfig:
        return egglm.EggConfig(self.width, self.layers)


def make_strategy(config: Config) -> integer.IntEGGROLL:
    return integer.IntEGGROLL(
        config.population,
        rank=config.rank,
        sigma_shift=config.sigma_shift,
        alpha=config.alpha,
        alpha_decay=config.alpha_decay,
        alpha_power=config.alpha_power,
        noise_reuse=config.noise_reuse,
        error_feedback=config.error_feedback,
        noise=config.noise,
        eval_batch_size=config.member_slice or None,
    )


def make_step(es: integer.IntEGGROLL, group_size: int):
    """The jitted generation ``step(state, hidden (N, layers, d) int8, tokens (S, T+1) uint8,
    resets (S, T) bool) -> (state, hidden, metrics)``: each of the ``S = N / group_size``
    streams is read by ``group_size`` consecutive members."""

    def step(state: integer.IntState, hidden: jax.Array, tokens: jax.Array, resets: jax.Array):
        member_tokens = jnp.repeat(tokens, group_size, axis=0)
        member_resets = jnp.repeat(resets, group_size, axis=0)
        scores, hidden = es.evaluate(
            state,
            egglm.fitness,
            member_tokens,
            member_resets,
            hidden,
            in_axes=0,
            has_aux=True,
        )
        state, info = es.tell(state, scores)
        bits = -jnp.mean(scores.astype(jnp.float32)) / (BITS_SCALE * (tokens.shape[1] - 1))
        return state, hidden, {"train_bits_per_byte": bits, **info}

    return jax.jit(step)


@functools.partial(jax.jit, static_argnums=4)
def _valid_batch(params, tokens, resets, hidden, slice_size):
    total, hidden = egglm.batch_loss_bits(params, tokens, resets, hidden, slice_size)
    return jnp.sum(total), hidden


def check_validation_split(corpus: text.Corpus, seq_len: int) -> None:
    """Refuse, before training, a validation split too short for one ``seq_len`` window."""
    if len(corpus.valid) < seq_len + 1:
        raise ValueError(
            f"the validation split of {corpus.name} has {len(corpus.valid)} bytes, fewer than "
            f"--seq-len + 1 = {seq_len + 1}: add data (files the split puts in validation) or "
            "lower --seq-len"
        )


def validate(params: Any, corpus: text.Corpus, config: Config, max_bytes: int) -> float:
    """Bits/byte of the unperturbed model on the first ``max_bytes`` validation bytes
    (``0``: all), read as ``valid_streams`` contiguous slices with the state carried."""
    check_validation_split(corpus, config.seq_len)
    streams = min(config.valid_streams, max(1, len(corpus.valid) // (config.seq_len + 1)))
    hidden = jnp.zeros((streams, config.layers, config.width), jnp.int8)
    total, count = 0, 0
    for tokens, resets in text.validation_batches(
        corpus.valid, corpus.valid_doc_starts, streams, config.seq_len, max_bytes or None
    ):
        bits, hidden = _valid_batch(
            params, jnp.asarray(tokens), jnp.asarray(resets), hidden, config.member_slice
        )
        total += int(bits)
        count += resets.size
    return total / BITS_SCALE / count


def side_by_side(
    step, state, hidden, tokens, resets, group_size: int, slice_size: int, repeats: int = 7
) -> tuple[float, float, float]:
    """Tokens/s of a full training step, of plain inference (the unperturbed model on the same
    member tokens) in the same slices of ``slice_size`` streams, and of plain inference as one
    vmap over all streams; timed alternately in one loop, medians of ``repeats``.

    The training steps run on copies: the run's state is not advanced."""
    member_tokens = jnp.repeat(tokens, group_size, axis=0)
    member_resets = jnp.repeat(resets, group_size, axis=0)
    sliced = jax.jit(functools.partial(egglm.batch_loss_bits, slice_size=slice_size))
    whole = jax.jit(functools.partial(egglm.batch_loss_bits, slice_size=0))
    calls = [
        lambda: step(state, hidden, tokens, resets),
        lambda: sliced(state.params, member_tokens, member_resets, hidden),
        lambda: whole(state.params, member_tokens, member_resets, hidden),
    ]
    jax.block_until_ready([call() for call in calls])
    times = [[] for _ in calls]
    for _ in range(repeats):
        for call, record in zip(calls, times, strict=True):
            started = time.perf_counter()
            jax.block_until_ready(call())
            record.append(time.perf_counter() - started)
    count = member_resets.size
    train, infer, infer_whole = (count / float(np.median(t)) for t in times)
    return train, infer, infer_whole


class Trainer(loop.Trainer):
    """The :class:`eggroll.train.loop.Trainer` of integer EGG pretraining."""

    final_differs = True  # the final validation reads more bytes than the periodic ones

    def __init__(self, config: Config, corpus: text.Corpus):
        check_validation_split(corpus, config.seq_len)
        self.config, self.corpus = config, corpus
        self.es = make_strategy(config)
        self.baselines = text.baselines(corpus)
        params = egglm.init_params(jax.random.key(config.seed + 1), config.model)
        self.state = self.es.init(jax.random.key(config.seed), params)
        self.hidden = jnp.zeros((config.population, config.layers, config.width), jnp.int8)
        self.streams = text.TextStreams(
            corpus.train, corpus.train_doc_starts, config.streams, config.seq_len, seed=config.seed
        )
        self.rows = distributed.local_rows(config.streams)  # this process's own streams
        self.train_step = make_step(self.es, config.group_size)
        self.fingerprint = {
            **self.es.config(),
            "width": config.width,
            "layers": config.layers,
            "group_size": config.group_size,
            "seq_len": config.seq_len,
            "data": config.data,
        }

    def batch(self) -> tuple[jax.Array, jax.Array]:
        tokens, resets = self.streams.next_batch(self.rows)
        streams, mesh = self.config.streams, self.es.mesh
        return (
            distributed.global_from_local(tokens, streams, mesh),
            distributed.global_from_local(resets, streams, mesh),
        )

    # -- the loop's protocol
    def arrays(self):
        return self.state, self.hidden

    def restore(self, arrays, host):
        self.state, self.hidden = arrays
        self.streams.load_state_dict(host["streams"])

    def host_state(self):
        return {"streams": self.streams.state_dict()}

    def step(self, index):
        self.state, self.hidden, info = self.train_step(self.state, self.hidden, *self.batch())
        return info, {"tokens": self.config.streams * self.config.seq_len}

    def evaluate(self, step, final):
        cfg = self.config
        bytes_ = cfg.final_valid_bytes if final else cfg.valid_bytes
        return {"valid_bits_per_byte": validate(self.state.params, self.corpus, cfg, bytes_)}

    def describe(self, record, evaluation):
        valid = (evaluation or {}).get("valid_bits_per_byte", float("nan"))
        return f"train {record['train_bits_per_byte']:.3f} valid {valid:.3f} bits/byte"

    def summary(self, result: loop.LoopResult) -> dict[str, Any]:
        cfg = self.config
        recent = [r["train_bits_per_byte"] for r in result.records if "train_bits_per_byte" in r]
        recent = [v for v in recent[-10:] if v is not None]
        probe = self.batch()  # a fresh batch: the saved stream position is untouched
        step_speed, inference, inference_whole = side_by_side(
            self.train_step, self.state, self.hidden, *probe, cfg.group_size, cfg.member_slice
        )
        tokens_per_step = cfg.population * cfg.seq_len
        final = result.evaluations["final"]["valid_bits_per_byte"]
        return {
            "valid_bits_per_byte": round(final, 4),
            "train_bits_per_byte": round(float(np.mean(recent)), 4) if recent else None,
            "baselines": {k: round(v, 4) for k, v in self.baselines.items()},
            "tokens_per_second": round(tokens_per_step * result.steps_per_second, 1),
            "inference_tokens_per_second": round(inference, 1),
            "one_vmap_inference_tokens_per_second": round(inference_whole, 1),
            "step_tokens_per_second": round(step_speed, 1),
            "training_vs_inference": round(step_speed / inference, 3),
            "population_size": cfg.population,
            "data_tokens": result.step * cfg.streams * cfg.seq_len,
            "corpus": self.corpus.name,
        }


def run(config: Config, callbacks: Iterable[Any] = (), say=print) -> dict[str, Any]:
    """Train, validate and summarise one run; returns the summary (also ``summary.json``).

    Everything that can be refused (settings, the data, a checkpoint that does not fit) is
    refused before the first compile."""
    run_dir = Path(config.run_dir or time.strftime("runs/pretrain-%Y%m%d-%H%M%S"))
    loop.check_run_dir(run_dir, config.resume)
    main = distributed.is_main_process()
    corpus = text.load_corpus(None if config.data == "stdlib" else config.data)
    trainer = Trainer(config, corpus)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "baselines.json").write_text(json.dumps(trainer.baselines))
        say(
            f"corpus {corpus.name}: {len(corpus.train):,} train / {len(corpus.valid):,} valid "
            "bytes; "
            + ", ".join(f"{k} {v:.3f}" for k, v in trainer.baselines.items())
            + " bits/byte (validation)"
        )
    from eggroll.train.plot import plot_pretrain

    return loop.run_loop(
        trainer,
        run_dir=run_dir,
        budget=loop.Budget(steps=config.steps, seconds=60 * config.minutes),
        log_every=config.log_every,
        eval_every=config.valid_every,
        callbacks=callbacks,
        **config.loop_options(),
        plot=plot_pretrain,
    )
