"""Benchmarks that print ratios measured side by side in one run.

    python scripts/bench.py lowrank-vs-naive [--widths 256 1024] [--population 1024] [--rank 1]
    python scripts/bench.py int-noise          # integer noise: threefry keys vs seed-made table
    python scripts/bench.py member-project     # x @ A_i under vmap: batched dot vs block GEMM

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


def _egg_setup(population: int, width: int, layers: int, seq_len: int):
    from eggroll.models import egg as egg_model

    config = egg_model.EggConfig(width=width, layers=layers)
    params = egg_model.init_params(jax.random.key(0), config)
    tokens = jax.random.randint(jax.random.key(2), (population, seq_len + 1), 0, 256)
    resets = jnp.zeros((population, seq_len), bool)
    hidden = jnp.zeros((population, layers, width), jnp.int8)
    return egg_model, params, tokens.astype(jnp.uint8), resets, hidden


def int_noise(args: argparse.Namespace) -> dict:
    """Integer EGGROLL generation time with threefry noise vs the seed-made noise table."""
    from eggroll import integer

    egg_model, params, tokens, resets, hidden = _egg_setup(
        args.population, args.width, args.layers, args.seq_len
    )
    rows = []
    for source in ("keys", "table"):
        es = integer.IntEGGROLL(args.population, rank=1, noise=source)
        state = es.init(jax.random.key(1), params)

        def generation(state, hidden, es=es):
            scores, hidden = es.evaluate(
                state, egg_model.fitness, tokens, resets, hidden, in_axes=0, has_aux=True
            )
            return es.tell(state, scores)[0], hidden

        step = jax.jit(generation)
        seconds = time_call(lambda step=step, state=state: step(state, hidden), args.repeats)
        table_bytes = int(state.noise_table.size)
        rows.append(
            {
                "noise": source,
                "generation_ms": round(1e3 * seconds, 1),
                "state_noise_bytes": table_bytes,
            }
        )
        print(
            f"noise={source:5s}  generation {1e3 * seconds:8.1f} ms  "
            f"table {table_bytes / 2**20:.1f} MiB",
            flush=True,
        )
    ratio = rows[0]["generation_ms"] / rows[1]["generation_ms"]
    print(f"keys / table time ratio: {ratio:.2f}")
    return {
        "benchmark": "int-noise",
        "machine": machine_info(),
        "population": args.population,
        "width": args.width,
        "layers": args.layers,
        "seq_len": args.seq_len,
        "rows": rows,
        "keys_over_table": round(ratio, 3),
    }


def member_project(args: argparse.Namespace) -> dict:
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
            rows.append(row)
            print(
                f"{row['dtype']:8s} n_in {n_in:5d}  plain {row['plain_ms']:8.2f} ms  "
                f"blocked {row['blocked_ms']:8.2f} ms  speedup {row['speedup']:5.1f}x",
                flush=True,
            )
    return {
        "benchmark": "member-project",
        "machine": machine_info(),
        "population": args.population,
        "rows_per_member": args.seq_len,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("lowrank-vs-naive", help="EGGROLL vs OpenES generation time, one layer")
    p.add_argument("--widths", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--population", type=int, default=1024)
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(run=lowrank_vs_naive)
    p = sub.add_parser("int-noise", help="integer EGGROLL: threefry noise vs noise table")
    p.add_argument("--population", type=int, default=512)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--repeats", type=int, default=7)
    p.set_defaults(run=int_noise)
    p = sub.add_parser("member-project", help="x @ A_i under vmap: batched dot vs block GEMM")
    p.add_argument("--widths", type=int, nargs="+", default=[128, 512])
    p.add_argument("--population", type=int, default=512)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--repeats", type=int, default=10)
    p.set_defaults(run=member_project)
    args = parser.parse_args()
    result = args.run(args)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{args.command}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
