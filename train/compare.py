"""EGGROLL against a baseline, same seeds and budgets, one table (and for fine-tuning a PNG).

    eggroll compare rl [--envs CartPole-v1 ...] [--seconds 300] [--no-stop]
    eggroll compare suite run|search|report|speed [...]   (eggroll.train.suite)
    eggroll compare finetune [--seconds 1200] [--grpo-args "--lr 3e-4"]

``rl``: EGGROLL vs OpenES on gymnax environments with the per-environment defaults, a
wall-clock budget each and (unless ``--no-stop``) a stop at the target return; writes
``results/rl-compare.json``. ``finetune``: EGGROLL vs GRPO at equal training seconds on one
task and base model (``--common-args`` go to both runs, ``--eggroll-args``/``--grpo-args`` to
one; every run's flags are checked before the first starts); writes
``results/llm-compare.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from eggroll.train import cli, finetune, rl

TARGETS = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0, "Pendulum-v1": -250.0}
RESULTS = Path("results")


def markdown_table(rows: list[dict[str, Any]], header: list[str], row: str) -> str:
    """A markdown table: ``header`` names the columns, ``row`` is the format string of one
    row's cells separated by `` | ``, filled from each row's keys."""
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    return "\n".join(lines + ["| " + row.format(**r) + " |" for r in rows])


def compare_rl(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for env in args.envs:
        for strategy in args.strategies:
            config = rl.Config(
                env=env,
                strategy=strategy,
                seconds=args.seconds,
                generations=args.generations,
                target=None if args.no_stop else TARGETS.get(env),
                seed=args.seed,
                run_dir=str(args.runs / f"{env}-{strategy}"),
                progress=False,
                checkpoint_every=10_000,
            )
            summary = rl.run(config)
            reached = summary["reached_target"] or {}
            rows.append(
                {
                    **{k: summary[k] for k in ("env", "strategy", "eval_return")},
                    **{k: summary[k] for k in ("eval_return_std", "env_steps", "generations")},
                    "target": TARGETS.get(env),
                    "train_seconds": summary["train_seconds"],
                    "seconds_to_target": reached.get("seconds"),
                    "env_steps_to_target": reached.get("env_steps"),
                    "to_target": (
                        f"{reached['seconds']} / {reached['env_steps']:,}"
                        if reached
                        else "not reached"
                    ),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    header = ["env", "strategy", "final return", "env steps", "seconds", "to target (s / steps)"]
    row = "{env} | {strategy} | {eval_return:.1f} ± {eval_return_std:.1f} | {env_steps:,} | "
    row += "{train_seconds} | {to_target}"
    print("\n" + markdown_table(rows, header, row))
    return rows


def compare_finetune(args: argparse.Namespace) -> list[dict[str, Any]]:
    unknown = sorted(set(args.methods) - set(finetune.METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {list(finetune.METHODS)}")
    configs = {}  # every run's flags are checked before the first one starts
    for method in args.methods:
        flags = [
            "--method", method, "--seconds", str(args.seconds),
            "--run-dir", str(args.runs / method), "--no-progress",
            *shlex.split(args.common_args),
            *shlex.split(getattr(args, f"{method}_args", "")),
        ]  # fmt: skip
        configs[method] = (flags, cli.parse("finetune", flags, "eggroll finetune")[0])
    rows, run_dirs = [], {}
    for method, (flags, config) in configs.items():
        summary = finetune.run(config)
        run_dirs[method] = args.runs / method
        keys = ("method", "task", "start_accuracy", "final_accuracy", "best_accuracy")
        keys += ("generations", "train_seconds", "seconds_per_generation", "population")
        rows.append({k: summary[k] for k in (*keys, "wall_seconds", "run_dir")} | {"flags": flags})
        print(json.dumps(rows[-1]), flush=True)
    header = ["method", "start", "final", "best", "generations", "training s", "s / generation"]
    row = "{method} | {start_accuracy:.3f} | {final_accuracy:.3f} | {best_accuracy:.3f} | "
    row += "{generations:,} | {train_seconds:.0f} | {seconds_per_generation:.3f}"
    print("\n" + markdown_table(rows, header, row))
    from eggroll.train.plot import plot_finetune_compare

    title = f"{rows[0]['task']}: held-out accuracy at equal training time"
    print(f"wrote {plot_finetune_compare(run_dirs, args.out.with_suffix('.png'), title)}")
    return rows


def main(argv: list[str] | None = None, prog: str = "eggroll compare") -> list[dict[str, Any]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "suite":  # the gymnax suite has its own modes and flags
        from eggroll.train import suite

        return suite.main(argv[1:], prog=f"{prog} suite")
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    rl_parser = kinds.add_parser("rl", help="EGGROLL vs OpenES on gymnax environments")
    kinds.add_parser("suite", help="the gymnax suite, PPO and evosax included (--help there)")
    rl_parser.add_argument("--envs", nargs="+", default=list(TARGETS))
    rl_parser.add_argument("--strategies", nargs="+", default=["eggroll", "openes"])
    rl_parser.add_argument("--seconds", type=float, default=300.0, help="budget per run")
    rl_parser.add_argument("--generations", type=int, default=100_000, help="budget per run")
    rl_parser.add_argument("--seed", type=int, default=0)
    rl_parser.add_argument("--no-stop", action="store_true", help="run the whole budget")
    rl_parser.add_argument("--runs", type=Path, default=Path("runs/compare"))
    rl_parser.add_argument("--out", type=Path, default=RESULTS / "rl-compare.json")
    ft_parser = kinds.add_parser("finetune", help="EGGROLL vs GRPO at equal training time")
    ft_parser.add_argument("--seconds", type=float, default=1200.0, help="budget per run")
    ft_parser.add_argument("--methods", nargs="+", default=["eggroll", "grpo"])
    ft_parser.add_argument("--common-args", default="", help="finetune flags for every run")
    ft_parser.add_argument("--eggroll-args", default="", help="finetune flags for EGGROLL")
    ft_parser.add_argument("--grpo-args", default="", help="finetune flags for GRPO")
    ft_parser.add_argument("--runs", type=Path, default=Path("runs/llm-compare"))
    ft_parser.add_argument("--out", type=Path, default=RESULTS / "llm-compare.json")
    args = parser.parse_args(argv)
    rows = compare_rl(args) if args.kind == "rl" else compare_finetune(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seconds_budget": args.seconds, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return rows
