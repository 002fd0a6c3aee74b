"""EGGROLL time per generation (one dense layer) against population, each sweep with the
unperturbed layer's inference on the same rows as its reference, and against width; log-log
fitted exponents, and a plot ``scaling.png`` next to the results file.

    python scripts/bench.py scaling
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import optax

import eggroll as egg
from eggroll.benchmarks import common

NAME = "scaling"
HELP = "time per generation against population and width"
NOISE_VARIANT = True  # has --noise: a keys run is written to and reported from NAME-keys.json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--populations", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 1024])
    p.add_argument("--population", type=int, default=1024, help="of the width sweep")
    p.add_argument(
        "--sweep-widths", type=int, nargs="+", default=[512, 1024], help="of the population sweeps"
    )
    p.add_argument("--noise", choices=["keys", "table"], default="table")
    p.add_argument("--repeats", type=int, default=20)


def _fit(xs, ts) -> float:
    """The log-log slope of ``ts`` against ``xs``."""
    import numpy as np

    return float(np.polyfit(np.log(xs), np.log(ts), 1)[0])


def _inference_seconds(n: int, width: int, repeats: int) -> float:
    """The unperturbed layer on the same ``(n, width)`` rows: the reference curve."""
    params = {"w": common.layer_params(width, 1)["w0"]}
    x = jax.random.normal(jax.random.key(1), (n, width))
    plain = jax.jit(lambda p: jax.vmap(lambda row: common.dense_layer_fitness(p, row))(x))
    return common.time_call(lambda: plain(params), repeats)


def _eggroll(population: int, noise: str) -> egg.EGGROLL:
    return egg.EGGROLL(population, sigma=0.01, rank=1, optimizer=optax.sgd(0.0), noise=noise)


def run(args: argparse.Namespace) -> dict:
    """EGGROLL time per generation (one dense layer) against population and against width,
    with log-log fitted exponents. Saves the plot to ``args.results_dir / "scaling.png"``."""
    population_sweeps = []
    for width in args.sweep_widths:
        by_pop, by_pop_inference = [], []
        for n in args.populations:
            by_pop.append(common.generation_seconds(_eggroll(n, args.noise), width, args.repeats))
            by_pop_inference.append(_inference_seconds(n, width, args.repeats))
        population_sweeps.append(
            {
                "width": width,
                "populations": args.populations,
                "ms": [round(1e3 * t, 3) for t in by_pop],
                "exponent": round(_fit(args.populations, by_pop), 3),
                "inference_ms": [round(1e3 * t, 3) for t in by_pop_inference],
                "inference_exponent": round(_fit(args.populations, by_pop_inference), 3),
            }
        )
    by_width = []
    for w in args.widths:
        by_width.append(
            common.generation_seconds(_eggroll(args.population, args.noise), w, args.repeats)
        )
    result = {
        "benchmark": NAME,
        "machine": common.machine_info(),
        "noise": args.noise,
        "population_sweeps": population_sweeps,
        "width_sweep": {
            "population": args.population,
            "widths": args.widths,
            "ms": [round(1e3 * t, 3) for t in by_width],
            "exponent": round(_fit(args.widths, by_width), 3),
        },
    }
    for sweep in population_sweeps:
        print("population_sweep", json.dumps(sweep), flush=True)
    print("width_sweep", json.dumps(result["width_sweep"]), flush=True)
    _plot(args, population_sweeps, by_width)
    return result


def _plot(args: argparse.Namespace, population_sweeps: list[dict], by_width: list[float]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    for sweep in population_sweeps:
        for key, style, name in (("ms", "o-", "EGGROLL"), ("inference_ms", "s--", "inference")):
            axes[0].loglog(
                args.populations, sweep[key], style, label=f"{name}, width {sweep['width']}"
            )
    axes[0].legend(fontsize=7)
    axes[0].set_xlabel("population")
    axes[1].loglog(args.widths, [1e3 * t for t in by_width], "o-")
    axes[1].set_xlabel(f"width (population {args.population})")
    axes[1].set_title(f"exponent {_fit(args.widths, by_width):.2f}")
    for ax in axes:
        ax.set_ylabel("ms / generation")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    results_dir = Path(args.results_dir)
    results_dir.mkdir(exist_ok=True)
    fig.savefig(results_dir / "scaling.png")
    plt.close(fig)


def render(result: dict) -> str:
    rows = []
    for sweep in result["population_sweeps"]:  # an EGGROLL row and an inference row each
        for name, ms, exponent in (
            ("EGGROLL", "ms", "exponent"),
            ("inference", "inference_ms", "inference_exponent"),
        ):
            rows.append(
                {
                    "sweep": f"population, {name} (width {sweep['width']})",
                    "values": sweep["populations"],
                    "ms": sweep[ms],
                    "fitted exponent": sweep[exponent],
                }
            )
    width_sweep = result["width_sweep"]
    rows.append(
        {
            "sweep": f"width (population {width_sweep['population']})",
            "values": width_sweep["widths"],
            "ms": width_sweep["ms"],
            "fitted exponent": width_sweep["exponent"],
        }
    )
    return common.markdown_table(rows, ["sweep", "values", "ms", "fitted exponent"])
