"""EGGROLL vs OpenES on gymnax environments: same seeds, same budget, one table.

    python scripts/rl_compare.py                                  # the three classic tasks
    python scripts/rl_compare.py --envs Breakout-MinAtar --seconds 1200 --no-stop

For every (environment, strategy) pair it runs scripts/rl_train.py's training in-process with
the per-environment defaults, a wall-clock budget, and (unless --no-stop) stops at the target.
Prints a markdown table and writes results/rl-compare.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rl_train import RLConfig, run

TARGETS = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0, "Pendulum-v1": -250.0}
RESULTS = Path(__file__).resolve().parent.parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(TARGETS))
    parser.add_argument("--strategies", nargs="+", default=["eggroll", "openes"])
    parser.add_argument("--seconds", type=float, default=300.0, help="budget per run")
    parser.add_argument("--generations", type=int, default=100_000, help="budget per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-stop", action="store_true", help="run the whole budget")
    parser.add_argument("--out", type=Path, default=RESULTS / "rl-compare.json")
    args = parser.parse_args()
    rows = []
    for env in args.envs:
        for strategy in args.strategies:
            target = None if args.no_stop else TARGETS.get(env)
            cfg = RLConfig(
                env=env,
                strategy=strategy,
                seconds=args.seconds,
                generations=args.generations,
                target=target,
                seed=args.seed,
                run_dir=f"runs/compare/{env}-{strategy}",
                progress=False,
                checkpoint_every=10_000,
            )
            summary = run(cfg)
            reached = summary["reached_target"]
            rows.append(
                {
                    "env": env,
                    "strategy": strategy,
                    "target": TARGETS.get(env),
                    "eval_return": summary["eval_return"],
                    "eval_return_std": summary["eval_return_std"],
                    "env_steps": summary["env_steps"],
                    "generations": summary["generations"],
                    "train_seconds": summary["train_seconds"],
                    "seconds_to_target": reached["seconds"] if reached else None,
                    "env_steps_to_target": reached["env_steps"] if reached else None,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print("\n| env | strategy | final return | env steps | seconds | to target (s / steps) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        to_target = (
            f"{r['seconds_to_target']} / {r['env_steps_to_target']:,}"
            if r["seconds_to_target"] is not None
            else "not reached"
        )
        print(
            f"| {r['env']} | {r['strategy']} | {r['eval_return']:.1f} ± "
            f"{r['eval_return_std']:.1f} | {r['env_steps']:,} | {r['train_seconds']} | "
            f"{to_target} |"
        )
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps({"seconds_budget": args.seconds, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
