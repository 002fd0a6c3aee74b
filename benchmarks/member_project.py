"""``x @ A_i`` under vmap: a plain batched dot vs eggroll.batching's block-GEMM rule.

python scripts/bench.py member-project
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from eggroll.benchmarks.common import add_row, make_result, markdown_table, time_call

NAME = "member-project"
HELP = "x @ A_i under vmap: batched dot vs block GEMM"
NOISE_VARIANT = False
PROGRESS = (  # a row's line
    "{dtype:8s} n_in {n_in:5d}  plain {plain_ms:8.2f} ms  "
    "blocked {blocked_ms:8.2f} ms  speedup {speedup:5.1f}x"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--widths", type=int, nargs="+", default=[128, 512])
    p.add_argument("--population", type=int, default=512)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--repeats", type=int, default=10)


def run(args: argparse.Namespace) -> dict:
    """``x @ A_i`` under vmap: a plain batched dot vs eggroll.batching's block-GEMM rule."""
    from eggroll.batching import member_project as blocked

    rows = []
    for dtype in (jnp.int8, jnp.float32):
        for n_in in args.widths:
            x = jax.random.randint(
                jax.random.key(0), (args.population, args.seq_len, n_in), -127, 127
            ).astype(dtype)
            a = jax.random.randint(jax.random.key(1), (args.population, n_in, 1), -40, 40).astype(
                dtype
            )
            out = jnp.int32 if dtype == jnp.int8 else jnp.float32
            plain = jax.jit(
                jax.vmap(
                    lambda x, a, out=out: jax.lax.dot_general(
                        x, a, (((1,), (0,)), ((), ())), preferred_element_type=out
                    )
                )
            )
            rule = jax.jit(jax.vmap(blocked))
            t_plain = time_call(lambda plain=plain, x=x, a=a: plain(x, a), args.repeats)
            t_rule = time_call(lambda rule=rule, x=x, a=a: rule(x, a), args.repeats)
            row = {
                "dtype": jnp.dtype(dtype).name,
                "n_in": n_in,
                "plain_ms": round(1e3 * t_plain, 2),
                "blocked_ms": round(1e3 * t_rule, 2),
                "speedup": round(t_plain / t_rule, 1),
            }
            add_row(rows, row, PROGRESS)
    return make_result(NAME, rows, population=args.population, rows_per_member=args.seq_len)


def render(result: dict) -> str:
    return markdown_table(result["rows"], ["dtype", "n_in", "plain_ms", "blocked_ms", "speedup"])
