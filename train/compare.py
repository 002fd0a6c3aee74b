"""EGGROLL against a baseline, same seeds and budgets, one table (and for fine-tuning a PNG).

    eggroll compare rl [--envs CartPole-v1 ...] [--seconds 300] [--no-stop]
    eggroll compare suite run|search|report|speed [...]   (eggroll.train.suite)
    eggroll compare finetune [--seeds 0 1 2] [--seconds 1200] [--grpo-args "--lr 3e-4"]
    eggroll compare finetune --report-only [--results results/llm-compare.jsonl]

``rl``: EGGROLL vs OpenES on gymnax environments with the per-environment defaults, a
wall-clock budget each and (unless ``--no-stop``) a stop at the target return; writes
``results/rl-compare.json``. ``finetune``: EGGROLL vs GRPO at equal training seconds on one
task and base model (``--common-args`` go to every run, ``--eggroll-args``/``--grpo-args`` to
one method's; every run's flags are checked before the first starts), one run per (method,
seed) in ``<runs>/<method>-seed<S>``. Each finished run is appended to ``--results`` as one
JSON line (a *cell*); cells already there with the same method, seed, task settings, budget
and flags are skipped, so the same command continues an interrupted comparison
(``--max-minutes``: start no cell after that). The report (``.md`` table, ``.summary.json``,
``.png`` next to the results file; ``--report-only`` rebuilds it) gives per method the start,
final and gain accuracy mean ± std over seeds and the reward diagnostics (docs/FINETUNE.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from eggroll.train import cli, finetune, loop, rl, suite
from eggroll.train.config import ArgumentParser

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


# ------------------------------------------------------------------------------ finetune
FINETUNE_KEY = ("method", "seed", "task_settings", "budget_seconds", "budget_generations")
PER_CELL = (
    "--method, --seed, --run-dir and --resume are set per cell by the comparison: use "
    "--methods, --seeds and --runs, not --common-args/--eggroll-args/--grpo-args"
)
CURVE_POINTS = 100  # diagnostics stored per cell: means over this many spans of generations


def finetune_key(cell: dict[str, Any]) -> str:
    """What makes two cells the same run: method, seed, task settings, budget and the extra
    finetune flags (a JSON string)."""
    key = {k: cell[k] for k in FINETUNE_KEY}
    return json.dumps({**key, "flags": list(cell["flags"])}, sort_keys=True)


def plan_finetune(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (seed, method) cell of the command, its flags parsed and checked (a bad flag
    exits 2 naming it; a bad comparison setting raises ValueError) before anything runs."""
    unknown = sorted(set(args.methods) - set(finetune.METHODS))
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; choose from {list(finetune.METHODS)}")
    if len(set(args.methods)) != len(args.methods):
        raise ValueError("--methods: each method once")
    if not args.seeds or len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        raise ValueError("--seeds must be distinct integers ≥ 0")
    if not (math.isfinite(args.max_minutes) and args.max_minutes >= 0):
        raise ValueError("--max-minutes must be a finite number ≥ 0 (0: no limit)")
    if not (math.isfinite(args.seconds) and args.seconds >= 0) or args.generations < 0:
        raise ValueError("--seconds and --generations must be ≥ 0 (finite)")
    runs = args.runs or Path("runs") / Path(args.results).stem
    cells = []
    for seed in args.seeds:  # seed-major: an interrupted comparison has every method per seed
        for method in args.methods:
            extra = shlex.split(args.common_args) + shlex.split(getattr(args, f"{method}_args"))
            run_dir = runs / f"{method}-seed{seed}"
            flags = [
                "--method", method, "--seconds", str(args.seconds),
                "--generations", str(args.generations), "--seed", str(seed),
                "--run-dir", str(run_dir), "--no-progress", *extra,
            ]  # fmt: skip
            config = cli.parse("finetune", flags, "eggroll finetune")[0]
            chosen = (config.method, config.seed, config.run_dir, config.resume)
            if chosen != (method, seed, str(run_dir), False):  # the --*-args overrode them
                raise ValueError(PER_CELL)
            cell = {
                "method": method,
                "seed": seed,
                "task_settings": config.make_task().describe(),
                "budget_seconds": config.seconds,
                "budget_generations": config.generations,
                "flags": extra,
            }
            cells.append({"key": finetune_key(cell), "cell": cell, "config": config})
    return cells


def _binned(rows: list[dict[str, Any]], keys: tuple[str, ...], points: int) -> dict[str, list]:
    """Per-generation series cut into at most ``points`` consecutive spans: each span's last
    ``step`` and ``seconds`` and the mean of every key (the keys the rows have)."""
    keys = tuple(k for k in keys if rows and k in rows[0])
    spans = [s for s in np.array_split(np.arange(len(rows)), min(points, len(rows))) if len(s)]
    out: dict[str, list] = {"step": [], "seconds": [], **{k: [] for k in keys}}
    for span in spans:
        out["step"].append(rows[span[-1]]["step"])
        out["seconds"].append(round(rows[span[-1]]["seconds"], 2))
        for k in keys:
            out[k].append(round(float(np.mean([rows[i][k] for i in span])), 4))
    return out


def run_finetune_cell(planned: dict[str, Any]) -> dict[str, Any]:
    """Train one (method, seed) cell (resuming its run folder if a killed comparison left a
    checkpoint there) and return its line: the summary's numbers, the held-out curve
    ``[[seconds, step, accuracy], ...]`` and the diagnostics in ≤ ``CURVE_POINTS`` spans."""
    config = planned["config"]
    run_dir = Path(config.run_dir)
    resume = (run_dir / loop.CHECKPOINT).exists()
    summary = finetune.run(dataclasses.replace(config, resume=resume))
    records = loop.read_jsonl(run_dir / loop.METRICS)
    evals = [r for r in records if "eval_accuracy" in r]
    train = [r for r in records if "correct_mean" in r]
    keys = ("start_accuracy", "final_accuracy", "best_accuracy", "generations", "train_seconds")
    keys += ("seconds_per_generation", "population", "eval_problems", "base_model", "model")
    return {
        **planned["cell"],
        "task": summary["task"],
        **{k: summary[k] for k in keys},
        "gain": round(summary["final_accuracy"] - summary["start_accuracy"], 4),
        "diagnostics": summary["diagnostics"],
        "wall_seconds": summary["wall_seconds"],
        "run_dir": str(run_dir),
        "resumed": resume,
        "curve": [[round(r["seconds"], 2), r["step"], r["eval_accuracy"]] for r in evals],
        "diagnostics_curve": _binned(train, finetune.DIAGNOSTIC_KEYS, CURVE_POINTS),
        "machine": suite.machine(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def compare_finetune(args: argparse.Namespace, planned: list[dict[str, Any]]) -> list[dict]:
    """Run the planned cells not yet in ``args.results`` (one JSON line each, appended as it
    finishes), then write the report; returns the planned cells' lines."""
    done = {finetune_key(c): c for c in suite.read_cells(args.results)}
    deadline = time.monotonic() + args.max_minutes * 60 if args.max_minutes else None
    for item in planned:
        if item["key"] in done:
            continue
        if deadline is not None and time.monotonic() > deadline:
            print("--max-minutes reached; run the same command again to continue", flush=True)
            break
        cell = run_finetune_cell(item)
        suite.append_cell(args.results, cell)
        done[item["key"]] = cell
        short = ("method", "seed", "start_accuracy", "final_accuracy", "gain", "generations")
        print(json.dumps({k: cell[k] for k in short}), flush=True)
    finetune_report(args.results)
    return [done[item["key"]] for item in planned if item["key"] in done]


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n − 1; ``None`` for one value)."""
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), std


def summarise_finetune(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task settings, budget, flags, method), over its seeds: start, final and
    gain (final − start) accuracy mean ± std, generations, seconds per generation and the
    diagnostics of the last 10 % of each run's generations (mean over seeds)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        key = json.loads(finetune_key(cell))
        del key["seed"]
        groups.setdefault(json.dumps(key, sort_keys=True), []).append(cell)
    rows = []
    for group in groups.values():
        first = group[0]
        row = {k: first[k] for k in ("method", "task", "task_settings", "flags")}
        row.update({k: first[k] for k in ("budget_seconds", "budget_generations")})
        row["seeds"] = sorted(c["seed"] for c in group)
        row["n"] = len(group)
        for name in ("start_accuracy", "final_accuracy", "gain", "best_accuracy"):
            mean, std = _mean_std([c[name] for c in group])
            row[name] = {"mean": round(mean, 4), "std": None if std is None else round(std, 4)}
        row["generations"] = round(float(np.mean([c["generations"] for c in group])), 1)
        speed = np.mean([c["seconds_per_generation"] for c in group])
        row["seconds_per_generation"] = round(float(speed), 4)
        tails = [c["diagnostics"].get("last_10pct", {}) for c in group]
        row["diagnostics_last_10pct"] = {
            k: round(float(np.mean([t[k] for t in tails])), 4)
            for k in finetune.DIAGNOSTIC_KEYS
            if all(k in t for t in tails)
        }
        row["base_model"] = sorted({c["base_model"] for c in group})
        row["machine"] = sorted({c["machine"] for c in group})
        rows.append(row)
    return rows


def _pm(stat: dict[str, float | None]) -> str:
    std = stat["std"]
    return f"{stat['mean']:.3f} ± " + ("–" if std is None else f"{std:.3f}")


def _budget(row: dict[str, Any]) -> str:
    """``1200 s``, ``3 generations`` or both (whichever ends the run first)."""
    parts = [f"{row['budget_seconds']:g} s"] if row["budget_seconds"] else []
    if row["budget_generations"]:
        parts.append(f"{row['budget_generations']:,} generations")
    return " or ".join(parts)


def finetune_markdown(rows: list[dict[str, Any]]) -> str:
    """The report's table: one line per row of :func:`summarise_finetune`."""
    header = [
        "task", "method", "seeds", "budget", "start", "final", "gain (final − start)",
        "generations", "s / generation", "same pairs", "signal groups", "train correct",
        "train format", "flags",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * (len(header) - 3)]
    lines[-1] += " --- |"
    for r in rows:
        tail = r["diagnostics_last_10pct"]
        cells = [
            " ".join(f"{k}={v}" for k, v in r["task_settings"].items()), r["method"],
            str(r["n"]), _budget(r), _pm(r["start_accuracy"]),
            _pm(r["final_accuracy"]), _pm(r["gain"]), f"{r['generations']:,.0f}",
            f"{r['seconds_per_generation']:.3f}",
            *(f"{tail[k]:.2f}" if k in tail else "–" for k in finetune.DIAGNOSTIC_KEYS),
            " ".join(r["flags"]) or "–",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    machines = sorted({m for r in rows for m in r["machine"]})
    bases = sorted({b for r in rows for b in r["base_model"]})
    lines += [
        "",
        "Held-out accuracy (greedy) mean ± sample std over seeds; gain per seed, then averaged. "
        "Diagnostics: mean over the last 10 % of each run's generations (same pairs: identical "
        f"answers of paired members). Base model: {', '.join(bases)}. "
        f"Machine: {'; '.join(machines)}.",
    ]
    return "\n".join(lines)


def finetune_report(results: Path) -> list[dict[str, Any]]:
    """Rebuild the table (``.md``, also printed), ``.summary.json`` and the figure (``.png``)
    next to ``results`` from its cells; returns the summary rows."""
    results = Path(results)
    cells = suite.read_cells(results)
    if not cells:
        raise ValueError(f"{results} has no cells: run the comparison first")
    rows = summarise_finetune(cells)
    table = finetune_markdown(rows)
    base = results.with_suffix("")
    md = base.with_name(base.name + ".md")
    tmp = md.with_name(f".{md.name}.tmp")
    tmp.write_text(table + "\n")
    os.replace(tmp, md)
    suite.write_json_atomic(base.with_name(base.name + ".summary.json"), {"rows": rows})
    from eggroll.train.plot import plot_finetune_seeds

    tasks = sorted({r["task"] for r in rows})
    budgets = sorted({_budget(r) for r in rows})
    title = f"{', '.join(tasks)}: {max(r['n'] for r in rows)} seeds, {', '.join(budgets)} per run"
    png = plot_finetune_seeds(_figure_groups(cells, rows), base.with_suffix(".png"), title)
    print("\n" + table)
    print(f"wrote {md}, {png}")
    return rows


def _figure_groups(cells: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, list]:
    """The cells per row of the table, labelled by method (and task and flags when needed)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    several_tasks = len({json.dumps(r["task_settings"], sort_keys=True) for r in rows}) > 1
    for cell in cells:
        label = cell["method"]
        if several_tasks:
            label += f" {cell['task']}"
        if sum(r["method"] == cell["method"] for r in rows) > 1 and cell["flags"]:
            label += f" [{' '.join(cell['flags'])}]"
        groups.setdefault(label, []).append(cell)
    return groups


def command_finetune(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:
    """``eggroll compare finetune``: check every cell's flags (exit 2, one line), run the
    missing cells and write the report; ``--report-only`` only rebuilds the report. A run-time
    error ends the command with one line (exit 1)."""
    if args.report_only:
        try:
            return finetune_report(args.results)
        except cli.USER_ERRORS as err:
            raise cli.fail(parser.prog, err) from None
    try:
        planned = plan_finetune(args)
    except ValueError as err:
        parser.error(str(err))
    try:
        return compare_finetune(args, planned)
    except cli.USER_ERRORS as err:
        raise cli.fail(parser.prog, err) from None


def main(argv: list[str] | None = None, prog: str = "eggroll compare") -> Any:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "suite":  # the gymnax suite has its own modes and flags
        return suite.main(argv[1:], prog=f"{prog} suite")
    parser = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
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
    ft_parser.add_argument(
        "--generations", type=int, default=0, help="budget per run (0: no limit)"
    )
    ft_parser.add_argument("--methods", nargs="+", default=["eggroll", "grpo"])
    ft_parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="a run per method")
    ft_parser.add_argument("--common-args", default="", help="finetune flags for every run")
    ft_parser.add_argument("--eggroll-args", default="", help="finetune flags for EGGROLL")
    ft_parser.add_argument("--grpo-args", default="", help="finetune flags for GRPO")
    runs_help = "run folders RUNS/METHOD-seedS (default: runs/NAME for --results NAME.jsonl)"
    ft_parser.add_argument("--runs", type=Path, help=runs_help)
    ft_parser.add_argument(
        "--results", type=Path, default=RESULTS / "llm-compare.jsonl", help="the cells (JSONL)"
    )
    ft_parser.add_argument(
        "--max-minutes", type=float, default=0.0, help="start no cell after this (0: no limit)"
    )
    ft_parser.add_argument(
        "--report-only", action="store_true", help="only rebuild the report from --results"
    )
    args = parser.parse_args(argv)
    if args.kind == "finetune":
        return command_finetune(args, ft_parser)
    rows = compare_rl(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seconds_budget": args.seconds, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return rows
