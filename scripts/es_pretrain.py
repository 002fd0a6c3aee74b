"""Integer-only ES pretraining of the EGG byte language model (the main job).

    python scripts/es_pretrain.py                       # CPU default: stdlib corpus, ~3.5 min
    python scripts/es_pretrain.py --data PATH --steps 5000 --population 4096
    python scripts/es_pretrain.py --resume --run-dir runs/pretrain-...

Every member of the population is the int8 EGG model with its own low-rank int8 perturbation;
``group_size`` members (antithetic pairs) read the same byte stream, and each member carries its
recurrent state from one step to the next. The fitness is minus the member's integer
cross-entropy; pairs are compared by sign and weights move by ±1 (eggroll.integer.IntEGGROLL).

Prints baselines (unigram, bigram, lzma bits/byte on the validation split) first, a progress
bar while training, and at exit one line of JSON (also ``summary.json`` in the run folder).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from common import (
    ClusterFlags,
    JsonlLog,
    arg,
    check_run_dir,
    config_dict,
    parse_config,
    read_jsonl,
    run_guarded,
    start_cluster,
    truncate_jsonl,
    try_plot,
    write_summary,
)
from tqdm import tqdm

import eggroll as egg
from eggroll import distributed, integer
from eggroll.data import text
from eggroll.intmath import BITS_SCALE
from eggroll.models import egglm

CHECKPOINT = "checkpoint.msgpack"


@dataclasses.dataclass(frozen=True)
class PretrainConfig(ClusterFlags):
    data: str = arg("stdlib", "'stdlib', a text file, a folder, or hf:NAME")
    run_dir: str = arg("", "run folder (default: runs/pretrain-<date>-<time>)")
    resume: bool = arg(False, "continue the run in --run-dir from its checkpoint")
    width: int = arg(64, "model width d")
    layers: int = arg(2, "number of blocks")
    population: int = arg(512, "population size N (a multiple of --group-size)")
    group_size: int = arg(2, "members sharing one data stream (even: antithetic pairs)")
    seq_len: int = arg(100, "tokens per member per step")
    rank: int = arg(1, "rank of each member's perturbation")
    sigma_shift: int = arg(4, "perturbation scale σ = 2^-sigma_shift")
    alpha: float = arg(1.0, "initial fraction of weights moved by chance per step")
    alpha_decay: float = arg(0.005, "alpha_t = alpha / (alpha_decay * t + 1) ** alpha_power")
    alpha_power: float = arg(1.0, "exponent of the alpha schedule")
    noise_reuse: int = arg(1, "generations that share one noise draw")
    error_feedback: bool = arg(True, "keep sub-threshold scores for later steps")
    member_batch: int = arg(
        32, "members evaluated at once, slices in a loop (keeps activations in cache); 0: all"
    )
    noise: str = arg("table", "int8 noise source: 'table' (seed-made int8 table) or 'keys'")
    steps: int = arg(2000, "training steps (generations)")
    minutes: float = arg(0.0, "stop after this many minutes of training (0: no limit)")
    valid_every: int = arg(200, "steps between validations")
    valid_bytes: int = arg(1 << 17, "validation bytes for periodic checks")
    final_valid_bytes: int = arg(1 << 20, "validation bytes for the final number (0: all)")
    valid_streams: int = arg(64, "parallel streams for validation")
    checkpoint_every: int = arg(400, "steps between checkpoints (and at the end)")
    log_every: int = arg(10, "steps between progress/metrics updates")
    seed: int = arg(0, "seed for parameters, noise and data streams")
    progress: bool = arg(True, "show a progress bar")

    def __post_init__(self):
        positive = (
            "width",
            "layers",
            "population",
            "group_size",
            "seq_len",
            "rank",
            "steps",
            "valid_every",
            "valid_bytes",
            "valid_streams",
            "checkpoint_every",
            "log_every",
            "noise_reuse",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1")
        if self.group_size % 2:
            raise ValueError("--group-size must be even (antithetic pairs share a stream)")
        if self.population % self.group_size:
            raise ValueError(
                f"--population {self.population} is not a multiple of --group-size "
                f"{self.group_size}"
            )
        if self.minutes < 0 or self.final_valid_bytes < 0 or self.member_batch < 0:
            raise ValueError("--minutes, --final-valid-bytes and --member-batch must be ≥ 0")
        if self.noise not in ("keys", "table"):
            raise ValueError("--noise must be 'keys' or 'table'")

    @property
    def streams(self) -> int:
        return self.population // self.group_size


def make_strategy(cfg: PretrainConfig) -> integer.IntEGGROLL:
    return integer.IntEGGROLL(
        cfg.population,
        rank=cfg.rank,
        sigma_shift=cfg.sigma_shift,
        alpha=cfg.alpha,
        alpha_decay=cfg.alpha_decay,
        alpha_power=cfg.alpha_power,
        noise_reuse=cfg.noise_reuse,
        error_feedback=cfg.error_feedback,
        noise=cfg.noise,
        eval_batch_size=cfg.member_batch or None,
    )


def make_train_step(es: integer.IntEGGROLL, group_size: int):
    """One generation: every member reads its group's stream; returns new state and stats."""

    def train_step(
        state: integer.IntState, hidden: jax.Array, tokens: jax.Array, resets: jax.Array
    ):
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

    return jax.jit(train_step)


@functools.partial(jax.jit, static_argnums=4)
def _valid_batch(params, tokens, resets, hidden, slice_size):
    total, hidden = egglm.batch_loss_bits(params, tokens, resets, hidden, slice_size)
    return jnp.sum(total), hidden


def validate(params: Any, corpus: text.Corpus, cfg: PretrainConfig, max_bytes: int) -> float:
    """Bits/byte of the unperturbed model on the first ``max_bytes`` validation bytes
    (``0``: all), read as ``valid_streams`` contiguous slices with the state carried."""
    config = egglm.EggConfig(cfg.width, cfg.layers)
    streams = min(cfg.valid_streams, max(1, len(corpus.valid) // (cfg.seq_len + 1)))
    hidden = jnp.zeros((streams, config.layers, config.width), jnp.int8)
    total, count = 0, 0
    for tokens, resets in text.validation_batches(
        corpus.valid, corpus.valid_doc_starts, streams, cfg.seq_len, max_bytes or None
    ):
        bits, hidden = _valid_batch(
            params, jnp.asarray(tokens), jnp.asarray(resets), hidden, cfg.member_batch
        )
        total += int(bits)
        count += resets.size
    if count == 0:
        raise ValueError("the validation split is too small for one batch: lower --seq-len")
    return total / BITS_SCALE / count


def side_by_side(
    train_step, state, hidden, tokens, resets, group_size: int, slice_size: int, repeats: int = 7
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
        lambda: train_step(state, hidden, tokens, resets),
        lambda: sliced(state.params, member_tokens, member_resets, hidden),
        lambda: whole(state.params, member_tokens, member_resets, hidden),
    ]
    jax.block_until_ready([call() for call in calls])
    times = [[] for _ in calls]
    for _ in range(repeats):
        for call, record in zip(calls, times, strict=True):
            start = time.perf_counter()
            jax.block_until_ready(call())
            record.append(time.perf_counter() - start)
    count = member_resets.size
    train, infer, infer_whole = (count / float(np.median(t)) for t in times)
    return train, infer, infer_whole


def run(cfg: PretrainConfig) -> dict[str, Any]:
    """Train, validate and summarise one run; returns the summary dict."""
    run_dir = Path(cfg.run_dir or time.strftime("runs/pretrain-%Y%m%d-%H%M%S"))
    checkpoint_path = check_run_dir(run_dir, cfg.resume, CHECKPOINT)
    main = distributed.is_main_process()  # only process 0 writes and prints
    progress = cfg.progress and main
    say = (tqdm.write if progress else print) if main else (lambda *_: None)
    es = make_strategy(cfg)  # rejects a bad configuration before any data or compile
    corpus = text.load_corpus(None if cfg.data == "stdlib" else cfg.data)
    base = text.baselines(corpus)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "baselines.json").write_text(json.dumps(base))
    say(
        f"corpus {corpus.name}: {len(corpus.train):,} train / {len(corpus.valid):,} valid bytes; "
        + ", ".join(f"{k} {v:.3f}" for k, v in base.items())
        + " bits/byte (validation)"
    )

    model_config = egglm.EggConfig(cfg.width, cfg.layers)
    state = es.init(
        jax.random.key(cfg.seed), egglm.init_params(jax.random.key(cfg.seed + 1), model_config)
    )
    hidden = jnp.zeros((cfg.population, cfg.layers, cfg.width), jnp.int8)
    streams = text.TextStreams(
        corpus.train, corpus.train_doc_starts, cfg.streams, cfg.seq_len, seed=cfg.seed
    )
    step, train_seconds, timed_steps = 0, 0.0, 0  # timed_* exclude the compiling first step
    log = JsonlLog(run_dir / "metrics.jsonl", enabled=main)
    fingerprint = {
        **es.config(),
        "width": cfg.width,
        "layers": cfg.layers,
        "group_size": cfg.group_size,
        "seq_len": cfg.seq_len,
        "data": cfg.data,
    }
    if cfg.resume:
        (state, hidden), meta = egg.checkpoint.load(checkpoint_path, (state, hidden), fingerprint)
        streams.load_state_dict(meta["streams"])
        step, train_seconds, timed_steps = meta["step"], meta["train_seconds"], meta["timed_steps"]
        if main:
            truncate_jsonl(log.path, lambda r: r.get("step", 0) <= step)
        say(f"resumed {run_dir} at step {step}")
    elif main:
        log.path.unlink(missing_ok=True)
    rows = distributed.local_rows(cfg.streams)  # this process reads only its own streams

    def batch():
        tokens, resets = streams.next_batch(rows)
        return (
            distributed.global_from_local(tokens, cfg.streams, es.mesh),
            distributed.global_from_local(resets, cfg.streams, es.mesh),
        )

    def save_checkpoint():
        host_state = distributed.to_host((state, hidden))  # a collective: every process calls
        if not main:
            return
        egg.checkpoint.save(
            checkpoint_path,
            host_state,
            fingerprint,
            {
                "step": step,
                "train_seconds": train_seconds,
                "timed_steps": timed_steps,
                "streams": streams.state_dict(),
                "config": config_dict(cfg),
            },
        )

    train_step = make_train_step(es, cfg.group_size)
    tokens_per_step = cfg.streams * cfg.seq_len
    bar = tqdm(
        total=cfg.steps, initial=step, disable=not cfg.progress, unit="step", dynamic_ncols=True
    )
    pending: list[tuple[int, dict]] = []
    last_valid = None
    segment_start = None  # wall clock of training since the last sync (compile excluded)
    deadline = time.perf_counter() + 60 * cfg.minutes if cfg.minutes else None
    while step < cfg.steps and (deadline is None or time.perf_counter() < deadline):
        tokens, resets = batch()
        state, hidden, info = train_step(state, hidden, tokens, resets)
        step += 1
        pending.append((step, info))
        if segment_start is None:  # the first step compiles: keep it out of the throughput
            jax.block_until_ready(state.params)
            segment_start, segment_from = time.perf_counter(), step
        sync = step % cfg.log_every == 0 or step == cfg.steps
        sync = sync or step % cfg.valid_every == 0 or step % cfg.checkpoint_every == 0
        if sync:
            jax.block_until_ready(state.params)
            train_seconds += time.perf_counter() - segment_start
            timed_steps += step - segment_from
            for s, item in pending:
                log.write(
                    {
                        "step": s,
                        "tokens": s * tokens_per_step,
                        **{k: float(v) for k, v in item.items()},
                    }
                )
            latest = float(pending[-1][1]["train_bits_per_byte"])
            pending.clear()
            if step % cfg.valid_every == 0:
                last_valid = validate(state.params, corpus, cfg, cfg.valid_bytes)
                log.write(
                    {
                        "step": step,
                        "tokens": step * tokens_per_step,
                        "valid_bits_per_byte": last_valid,
                    }
                )
            if step % cfg.checkpoint_every == 0:
                save_checkpoint()
            speed = cfg.population * cfg.seq_len * timed_steps / max(train_seconds, 1e-9)
            bar.set_postfix_str(
                f"train {latest:.3f} valid {last_valid or float('nan'):.3f} "
                f"bits/byte, {speed:,.0f} tok/s"
            )
            segment_start, segment_from = time.perf_counter(), step
        bar.update(1)
    bar.close()
    jax.block_until_ready(state.params)
    save_checkpoint()

    final_valid = validate(state.params, corpus, cfg, cfg.final_valid_bytes)
    log.write(
        {
            "step": step,
            "tokens": step * tokens_per_step,
            "valid_bits_per_byte": final_valid,
            "final": True,
        }
    )
    records = read_jsonl(log.path)
    recent = [r["train_bits_per_byte"] for r in records if "train_bits_per_byte" in r][-10:]
    probe = batch()  # a fresh batch: the saved stream position is untouched
    step_speed, inference, inference_whole = side_by_side(
        train_step, state, hidden, *probe, cfg.group_size, cfg.member_batch
    )
    training = cfg.population * cfg.seq_len * timed_steps / max(train_seconds, 1e-9)
    summary = {
        "valid_bits_per_byte": round(final_valid, 4),
        "train_bits_per_byte": round(float(np.mean(recent)), 4) if recent else None,
        "baselines": {k: round(v, 4) for k, v in base.items()},
        "tokens_per_second": round(training, 1),
        "inference_tokens_per_second": round(inference, 1),
        "one_vmap_inference_tokens_per_second": round(inference_whole, 1),
        "step_tokens_per_second": round(step_speed, 1),
        "training_vs_inference": round(step_speed / inference, 3),
        "wall_seconds": None,
        "train_seconds": round(train_seconds, 2),
        "steps": step,
        "population_size": cfg.population,
        "data_tokens": step * tokens_per_step,
        "corpus": corpus.name,
        "run_dir": str(run_dir),
        "devices": jax.device_count(),
    }
    if main:
        from plot import plot_pretrain

        summary["curve"] = try_plot(plot_pretrain, run_dir, say)
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    cfg = parse_config(PretrainConfig, argv, __doc__.splitlines()[0])
    start_cluster(cfg)
    summary = run_guarded(lambda: run(cfg))
    summary["wall_seconds"] = round(time.perf_counter() - started, 2)
    if distributed.is_main_process():
        print(write_summary(Path(summary["run_dir"]), summary), flush=True)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
