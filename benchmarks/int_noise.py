"""Integer EGGROLL generation time with threefry-key noise vs the seed-made noise table.

python scripts/bench.py int-noise
"""

from __future__ import annotations

import argparse

import jax

from eggroll.benchmarks.common import egg_lm_setup, machine_info, markdown_table, time_call

NAME = "int-noise"
HELP = "integer EGGROLL: threefry noise vs noise table"
NOISE_VARIANT = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--population", type=int, default=512)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--member-batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)


def run(args: argparse.Namespace) -> dict:
    """Integer EGGROLL generation time with threefry noise vs the seed-made noise table."""
    from eggroll import integer
    from eggroll.models import egglm

    params, tokens, resets, hidden = egg_lm_setup(
        args.population, args.width, args.layers, args.seq_len
    )
    rows = []
    for source in ("keys", "table"):
        es = integer.IntEGGROLL(
            args.population, rank=1, noise=source, eval_batch_size=args.member_batch
        )
        state = es.init(jax.random.key(1), params)

        def generation(state, hidden, es=es):
            scores, hidden = es.evaluate(
                state, egglm.fitness, tokens, resets, hidden, in_axes=0, has_aux=True
            )
            return es.tell(state, scores)[0], hidden

        step = jax.jit(generation)
        seconds = time_call(lambda step=step, state=state: step(state, hidden), args.repeats)
        # No table (None) with threefry keys; int8, so its size is its bytes.
        table = state.noise_table
        table_bytes = 0 if table is None else int(table.size)
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
        "benchmark": NAME,
        "machine": machine_info(),
        "population": args.population,
        "width": args.width,
        "layers": args.layers,
        "seq_len": args.seq_len,
        "rows": rows,
        "keys_over_table": round(ratio, 3),
    }


def render(result: dict) -> str:
    return (
        markdown_table(result["rows"], ["noise", "generation_ms", "state_noise_bytes"])
        + f"\n\nthreefry keys / table time: {result['keys_over_table']}"
    )
