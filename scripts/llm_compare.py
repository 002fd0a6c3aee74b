"""EGGROLL vs GRPO fine-tuning at equal wall-clock: one task, one base model, one PNG.

    python scripts/llm_compare.py                                  # 2-digit addition, 1200 s each
    python scripts/llm_compare.py --seconds 300 --grpo-args "--lr 3e-4"

Runs scripts/llm_finetune.py's training in-process, once per method, with the same task, base
model, seed and training-seconds budget (compilation and held-out evaluation excluded from the
budget for both). ``--common-args`` go to both runs, ``--eggroll-args``/``--grpo-args`` to one.
Prints a markdown table, writes ``results/llm-compare.json`` and the held-out accuracy of both
against training seconds in ``results/llm-compare.png``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from common import parse_config
from llm_finetune import METHODS, FinetuneConfig, run
from plot import plot_finetune_compare

RESULTS = Path(__file__).resolve().parent.parent / "results"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1200.0, help="training budget per run")
    parser.add_argument("--methods", nargs="+", default=["eggroll", "grpo"])
    parser.add_argument("--common-args", default="", help="llm_finetune.py flags for every run")
    parser.add_argument("--eggroll-args", default="", help="llm_finetune.py flags for EGGROLL")
    parser.add_argument("--grpo-args", default="", help="llm_finetune.py flags for GRPO")
    parser.add_argument("--runs", type=Path, default=Path("runs/llm-compare"))
    parser.add_argument("--out", type=Path, default=RESULTS / "llm-compare.json")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {list(METHODS)}")
    configs = {}  # every run's flags are checked before the first one starts
    for method in args.methods:
        flags = [
            "--method", method, "--seconds", str(args.seconds),
            "--run-dir", str(args.runs / method), "--no-progress",
            *shlex.split(args.common_args),
            *shlex.split(getattr(args, f"{method}_args", "")),
        ]  # fmt: skip
        configs[method] = (flags, parse_config(FinetuneConfig, flags, "llm_finetune.py"))
    rows, run_dirs = [], {}
    for method, (flags, cfg) in configs.items():
        run_dir = args.runs / method
        summary = run(cfg)
        run_dirs[method] = run_dir
        rows.append(
            {
                key: summary[key]
                for key in (
                    "method",
                    "task",
                    "start_accuracy",
                    "final_accuracy",
                    "best_accuracy",
                    "generations",
                    "train_seconds",
                    "seconds_per_generation",
                    "population",
                    "wall_seconds",
                    "run_dir",
                )
            }
            | {"flags": flags}
        )
        print(json.dumps(rows[-1]), flush=True)
    print("\n| method | start | final | best | generations | training s | s / generation |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['method']} | {r['start_accuracy']:.3f} | {r['final_accuracy']:.3f} | "
            f"{r['best_accuracy']:.3f} | {r['generations']:,} | {r['train_seconds']:.0f} | "
            f"{r['seconds_per_generation']:.3f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seconds_budget": args.seconds, "rows": rows}, indent=2))
    title = f"{rows[0]['task']}: held-out accuracy at equal training time"
    png = plot_finetune_compare(run_dirs, args.out.with_suffix(".png"), title)
    print(f"wrote {args.out} and {png}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
