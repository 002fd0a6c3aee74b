"""Make the tiny base models that ship with the package (train/base_models/).

    python scripts/make_base_models.py                       # arithmetic and countdown, default
    python scripts/make_base_models.py --tasks countdown --force
    python scripts/make_base_models.py --tasks countdown --base-steps 800 --out /tmp/try

For each task (its default settings), the fine-tuning recipe's base model
(``eggroll.train.finetune.train_base_model``: backprop on the task's training problems) is
trained, its start accuracy measured on the held-out problems by the fine-tuning run's own
evaluation (``finetune.start_evaluation``: greedy, the first 128 and the default 512 of
``task.problems("test", n, 0)``), and the Hugging Face folder written as
``<out>/tiny-<task>-<digest>/`` with ``eggroll_base.json`` (the recipe, final loss, seconds,
machine and start accuracies). ``eggroll finetune`` uses a shipped folder whose name matches
its recipe instead of training one, so every machine starts from the same bits (training the
model again gives other bits on another CPU kind). Existing folders are kept unless
``--force``. Needs the ``llm`` extra (safetensors).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import jax

from eggroll.models import hf
from eggroll.train import finetune, suite

EVAL_SIZES = (128, 512)  # the test's problems and the run's default --eval-problems


def make(task: str, out: Path, base_steps: int | None, force: bool) -> Path:
    """Train, measure and write one base model; returns its folder."""
    cfg = finetune.Config(task=task, base_steps=base_steps, progress=False)
    problem_set = cfg.make_task()
    folder = out / finetune.base_model_name(cfg, problem_set)
    if folder.exists() and not force:
        print(f"{folder} exists (--force replaces it)")
        return folder
    print(f"training {folder.name}: {cfg.base_steps} backprop steps on {problem_set.describe()}")
    started = time.perf_counter()
    params, config, tokenizer, loss = finetune.train_base_model(cfg, problem_set)
    seconds = round(time.perf_counter() - started, 1)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf.save(tmp, params, config, tokenizer)
    info = {
        **finetune.base_model_spec(cfg, problem_set),
        "final_loss": round(loss, 4),
        "seconds": seconds,
        "machine": suite.machine(),
        "jax": jax.__version__,
        "made": time.strftime("%Y-%m-%d"),
        "start_accuracy": {},
        "start_format": {},
    }
    for n in EVAL_SIZES:
        measure = finetune.Config(task=task, model=str(tmp), eval_problems=n, progress=False)
        result = finetune.start_evaluation(measure, say=lambda *_: None)
        info["start_accuracy"][str(n)] = round(result["eval_accuracy"], 4)
        info["start_format"][str(n)] = round(result["eval_format"], 4)
    (tmp / finetune.BASE_INFO).write_text(json.dumps(info, indent=2) + "\n")
    for path in tmp.iterdir():  # hf.save's temp files are 0600: package data must be readable
        path.chmod(0o644)
    if folder.exists():
        shutil.rmtree(folder)
    os.rename(tmp, folder)
    print(json.dumps({"folder": str(folder), **info}), flush=True)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["arithmetic", "countdown"])
    parser.add_argument("--base-steps", type=int, default=None, help="default: the task's")
    parser.add_argument("--out", type=Path, default=finetune.SHIPPED_MODELS)
    parser.add_argument("--force", action="store_true", help="replace existing folders")
    args = parser.parse_args(argv)
    for task in args.tasks:
        if task not in ("arithmetic", "countdown"):
            parser.error(f"--tasks: {task!r} has no shipped base model (arithmetic, countdown)")
    if args.base_steps is not None and args.base_steps < 1:
        parser.error("--base-steps must be ≥ 1")
    for task in args.tasks:
        make(task, args.out, args.base_steps, args.force)


if __name__ == "__main__":
    sys.exit(main())
