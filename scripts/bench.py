"""Benchmarks that print ratios measured side by side in one run.

    python scripts/bench.py lowrank-vs-naive [--widths 256 1024] [--population 1024] [--rank 1]

Results go to ``results/<subcommand>.json`` (ignored by git); docs/BENCHMARKS.md records them
with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import eggroll as egg

RESULTS = Path(__file__).resolve().parent.parent / "results"


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def time_call(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``fn()`` after one warm-up (compile) call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dense_layer_fitness(view: dict, x: jax.Array) -> jax.Array:
    """One dense layer on this member's input row ``x (width,)``."""
    return jnp.sum(jnp.tanh(egg.nn.dense(x, view["w"])))


def generation_seconds(strategy: egg.Strategy, width: int, repeats: int) -> float:
    params = {"w": jax.random.normal(jax.random.key(0), (width, width)) / jnp.sqrt(width)}
    x = jax.random.normal(jax.random.key(1), (strategy.population_size, width))
    state = strategy.init(jax.random.key(2), params)
    step = jax.jit(lambda s: strategy.step(s, dense_layer_fitness, x, in_axes=0)[0])
    return time_call(lambda: step(state), repeats)


def lowrank_vs_naive(args: argparse.Namespace) -> dict:
    rows = []
    for width in args.widths:
        # Naive ES must evaluate in slices of members, or N full matrices exhaust memory.
        naive_batch = max(1, min(args.population, (1 << 26) // (width * width)))
        eggroll = egg.EGGROLL(args.population, sigma=0.01, rank=args.rank, optimizer=optax.sgd(0.0))
        openes = egg.OpenES(
            args.population, sigma=0.01, optimizer=optax.sgd(0.0), eval_batch_size=naive_batch
        )
        t_egg = generation_seconds(eggroll, width, args.repeats)
        t_open = generation_seconds(openes, width, max(1, args.repeats // 2))
        row = {
            "width": width,
            "population": args.population,
            "rank": args.rank,
            "eggroll_ms": round(1e3 * t_egg, 2),
            "openes_ms": round(1e3 * t_open, 2),
            "speedup": round(t_open / t_egg, 1),
        }
        rows.append(row)
        print(
            f"width {width:5d}  pop {args.population:5d}  rank {args.rank}  "
            f"EGGROLL {row['eggroll_ms']:9.2f} ms  OpenES {row['openes_ms']:10.2f} ms  "
            f"speedup {row['speedup']:6.1f}x",
            flush=True,
        )
    return {"benchmark": "lowrank-vs-naive", "machine": machine_info(), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("lowrank-vs-naive", help="EGGROLL vs OpenES generation time, one layer")
    p.add_argument("--widths", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--population", type=int, default=1024)
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(run=lowrank_vs_naive)
    args = parser.parse_args()
    result = args.run(args)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{args.command}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
