"""Training throughput (perturbed forward + update) as a share of plain batched inference of
the same model on the same inputs: an MLP policy, the EGG int8 LM and the tiny float LM.

    python scripts/bench.py vs-inference
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

import eggroll as egg
from eggroll.benchmarks.common import egg_lm_setup, machine_info, markdown_table

NAME = "vs-inference"
HELP = "training throughput as a share of inference"
NOISE_VARIANT = False
COLUMNS = [
    "model",
    "members",
    "tokens_per_member",
    "train_ms",
    "inference_ms",
    "percent_of_inference",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--population", type=int, default=4096)
    p.add_argument("--egg-population", type=int, default=512)
    p.add_argument("--egg-widths", type=int, nargs="+", default=[64, 128])
    p.add_argument("--lm-population", type=int, default=128)
    p.add_argument("--mlp-obs", type=int, default=100, help="observations per member, RL-like row")
    p.add_argument("--member-batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)


def paired(
    train: Callable[[], object], infer: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Median wall seconds of ``train()`` and ``infer()``, timed alternately in one loop after
    one warm-up (compile) call of each."""
    jax.block_until_ready((train(), infer()))
    t_train, t_infer = [], []
    for _ in range(repeats):
        for fn, times in ((train, t_train), (infer, t_infer)):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - start)
    return statistics.median(t_train), statistics.median(t_infer)


def _row(model: str, members: int, per_member: int, t_train: float, t_infer: float) -> dict:
    return {
        "model": model,
        "members": members,
        "tokens_per_member": per_member,
        "train_ms": round(1e3 * t_train, 2),
        "inference_ms": round(1e3 * t_infer, 2),
        "percent_of_inference": round(100 * t_infer / t_train, 1),
    }


def run(args: argparse.Namespace) -> dict:
    """Training throughput (perturbed forward + update) as a share of plain batched inference
    of the same model on the same inputs, timed alternately in one loop."""
    from eggroll import integer
    from eggroll.models import egglm, llm, lm_train, mlp

    rows = []
    # MLP policy, the paper's 3 × 256: one observation per member (the worst case: the update
    # is a GEMM of half the inference's size) with both noise sources, and an RL-like batch of
    # observations per member (a rollout's steps share the member's noise and the update).
    config = mlp.MLPConfig((256, 256, 256))
    params = mlp.init_params(jax.random.key(0), 64, 8, config)
    fitness = lambda view, x: jnp.sum(mlp.apply(view, x))  # noqa: E731
    infer = jax.jit(jax.vmap(lambda x: jnp.sum(mlp.apply(params, x))))
    for source, per_member in (("keys", 1), ("table", 1), ("table", args.mlp_obs)):
        n = args.population if per_member == 1 else args.population // 8
        obs = jax.random.normal(jax.random.key(1), (n, per_member, 64))
        es = egg.EGGROLL(n, sigma=0.05, rank=1, optimizer=optax.sgd(1e-3), noise=source)
        state = es.init(jax.random.key(2), params)
        train = jax.jit(lambda s, es=es, obs=obs: es.step(s, fitness, obs, in_axes=0)[0])
        t_train, t_infer = paired(
            lambda train=train, state=state: train(state),
            lambda obs=obs: infer(obs),
            args.repeats,
        )
        rows.append(_row(f"MLP 3x256 policy, noise={source}", n, per_member, t_train, t_infer))

    # EGG int8 LM, 100 tokens per member.
    for width in args.egg_widths:
        p, tokens, resets, hidden = egg_lm_setup(args.egg_population, width, 2, 100)
        ies = integer.IntEGGROLL(
            args.egg_population, rank=1, error_feedback=True, eval_batch_size=args.member_batch
        )
        istate = ies.init(jax.random.key(1), p)

        def generation(
            st, ies=ies, tokens=tokens, resets=resets, hidden=hidden, fitness=egglm.fitness
        ):
            scores, _ = ies.evaluate(st, fitness, tokens, resets, hidden, in_axes=0, has_aux=True)
            return ies.tell(st, scores)[0]

        step = jax.jit(generation)
        # Inference in the same cache-sized slices as the training step's evaluation.
        forward = jax.jit(functools.partial(egglm.batch_loss_bits, slice_size=args.member_batch))
        t_train, t_infer = paired(
            lambda step=step, istate=istate: step(istate),
            lambda forward=forward, p=p, tokens=tokens, resets=resets, hidden=hidden: forward(
                p, tokens, resets, hidden
            ),
            args.repeats,
        )
        rows.append(_row(f"EGG int8 LM d={width} L=2", args.egg_population, 100, t_train, t_infer))

    # The float LM (tiny byte Llama-style decoder), 100 tokens per member, next-token loss.
    lm_config = llm.tiny_byte_config()
    lm_params = llm.init_params(jax.random.key(0), lm_config)
    n = args.lm_population
    lm_tokens = jax.random.randint(jax.random.key(1), (n, 1, 101), 0, 256)
    les = egg.EGGROLL(
        n,
        sigma=0.01,
        rank=1,
        optimizer=optax.sgd(1e-3),
        noise="table",
        leaf_rule=llm.leaf_rule,
        eval_batch_size=args.member_batch,
    )
    lstate = les.init(jax.random.key(2), lm_params)
    lm_fitness = lambda view, t: -lm_train.loss_fn(view, lm_config, t)  # noqa: E731
    lm_train_step = jax.jit(lambda s: les.step(s, lm_fitness, lm_tokens, in_axes=0)[0])
    lm_infer = jax.jit(
        lambda p, t: jax.lax.map(
            lambda ti: lm_train.loss_fn(p, lm_config, ti), t, batch_size=args.member_batch
        )
    )
    t_train, t_infer = paired(
        lambda: lm_train_step(lstate), lambda: lm_infer(lm_params, lm_tokens), args.repeats
    )
    lm_name = f"float LM d={lm_config.hidden_size} L={lm_config.num_layers}"
    rows.append(_row(lm_name, n, 100, t_train, t_infer))
    for row in rows:
        print(
            f"{row['model']:32s} N={row['members']:5d}  train {row['train_ms']:9.2f} ms  "
            f"inference {row['inference_ms']:9.2f} ms  {row['percent_of_inference']:5.1f}%",
            flush=True,
        )
    return {"benchmark": NAME, "machine": machine_info(), "rows": rows}


def render(result: dict) -> str:
    return markdown_table(result["rows"], COLUMNS)
