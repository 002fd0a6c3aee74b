"""EGGROLL vs full-rank OpenES: time per generation and XLA's peak memory.

python scripts/bench.py lowrank-vs-naive [--widths 256 1024] [--populations 1024] [--ranks 1]
"""

from __future__ import annotations

import argparse

import optax

import eggroll as egg
from eggroll.benchmarks import common

NAME = "lowrank-vs-naive"
HELP = "EGGROLL vs OpenES time and memory per generation"
NOISE_VARIANT = True  # has --noise: a keys run is written to and reported from NAME-keys.json
MODELS = {"dense": 1, "mlp3": 3}  # name: depth of square tanh layers
COLUMNS = [
    "model",
    "width",
    "population",
    "rank",
    "eggroll_ms",
    "openes_ms",
    "speedup",
    "eggroll_mib",
    "openes_mib",
    "memory_ratio",
]
PROGRESS = (  # a row's line
    "{model:5s} width {width:5d} pop {population:5d} rank {rank}  "
    "EGGROLL {eggroll_ms:9.2f} ms {eggroll_mib:8.1f} MiB  "
    "OpenES {openes_ms:10.2f} ms {openes_mib:8.1f} MiB  "
    "speedup {speedup:6.1f}x  memory {memory_ratio:5.1f}x"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=["dense", "mlp3"], choices=list(MODELS))
    p.add_argument("--widths", type=int, nargs="+", default=[256, 1024, 2048])
    p.add_argument("--populations", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 4])
    p.add_argument("--noise", choices=["keys", "table"], default="table")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--naive-repeats", type=int, default=1)


def run(args: argparse.Namespace) -> dict:
    """EGGROLL vs full-rank OpenES: time per generation and XLA's peak memory, measured for
    each (model, width, population, rank) in the same run with the same noise source."""
    rows = []
    for model in args.models:
        depth = MODELS[model]
        for width in args.widths:
            for population in args.populations:
                # Naive ES must evaluate in slices of members, or N full matrices exhaust memory.
                naive_batch = max(1, min(population, (1 << 26) // (depth * width * width)))
                while population % naive_batch:
                    naive_batch -= 1
                # The table must hold a full-rank draw of the biggest matrix for OpenES.
                naive_table = max(1 << 20, 1 << (2 * width * width - 1).bit_length())
                openes = egg.OpenES(
                    population,
                    sigma=0.01,
                    optimizer=optax.sgd(0.0),
                    eval_batch_size=naive_batch,
                    noise=args.noise,
                    table_size=naive_table,
                )
                open_step, open_state = common.generation_step(openes, width, depth)
                t_open = common.time_call(
                    lambda s=open_step, st=open_state: s(st), args.naive_repeats
                )
                open_bytes = common.xla_peak_bytes(open_step, open_state)
                for rank in args.ranks:
                    eggroll = egg.EGGROLL(
                        population,
                        sigma=0.01,
                        rank=rank,
                        optimizer=optax.sgd(0.0),
                        noise=args.noise,
                    )
                    egg_step, egg_state = common.generation_step(eggroll, width, depth)
                    t_egg = common.time_call(lambda s=egg_step, st=egg_state: s(st), args.repeats)
                    egg_bytes = common.xla_peak_bytes(egg_step, egg_state)
                    row = {
                        "model": model,
                        "width": width,
                        "population": population,
                        "rank": rank,
                        "eggroll_ms": round(1e3 * t_egg, 2),
                        "openes_ms": round(1e3 * t_open, 2),
                        "speedup": round(t_open / t_egg, 1),
                        "eggroll_mib": round(egg_bytes / 2**20, 1),
                        "openes_mib": round(open_bytes / 2**20, 1),
                        "memory_ratio": round(open_bytes / egg_bytes, 1),
                    }
                    common.add_row(rows, row, PROGRESS)
    return common.make_result(NAME, rows, noise=args.noise)


def render(result: dict) -> str:
    return f"Noise source for both: `{result.get('noise', 'keys')}`.\n\n" + common.markdown_table(
        result["rows"], COLUMNS
    )
