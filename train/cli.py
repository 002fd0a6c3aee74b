"""The ``eggroll`` command: one subcommand per application, the same flags as the scripts.

    eggroll pretrain [--steps N --minutes M ...]     integer EGG pretraining (the main job)
    eggroll rl --env CartPole-v1 [--strategy openes]  ES on a gymnax environment
    eggroll finetune [--method grpo --task countdown] LLM fine-tuning with verifiable rewards
    eggroll lm [--data PATH]                          backprop pretraining of the tiny byte LLM
    eggroll compare rl|suite|finetune [...]           EGGROLL vs a baseline, side by side
    eggroll bench SUBCOMMAND [...]                    benchmarks and the report
    eggroll plot RUN_DIR                              redraw a run's curve

Settings are checked before anything runs; a bad setting or input ends the command with one
line naming what to change (exit 2 for flags, 1 for run-time errors such as a checkpoint that
does not fit), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from eggroll import checkpoint, distributed
from eggroll.train import cluster, loop
from eggroll.train.config import ArgumentParser, add_fields, from_namespace

APPLICATIONS = {
    "pretrain": "eggroll.train.pretrain",
    "rl": "eggroll.train.rl",
    "finetune": "eggroll.train.finetune",
    "lm": "eggroll.train.lm",
}
EXTRA = {
    "compare": "eggroll.train.compare",
    "bench": "eggroll.benchmarks.cli",
    "plot": "eggroll.train.plot",
}
# Errors a user can act on: reported as one line, not a traceback.
USER_ERRORS = (ValueError, OSError, checkpoint.CheckpointError, loop.TrainingError)


def parse(name: str, argv: list[str] | None, prog: str | None = None):
    """``(config, cluster_flags)`` of application ``name`` from command-line words."""
    module = importlib.import_module(APPLICATIONS[name])
    parser = ArgumentParser(
        prog=prog or f"eggroll {name}",
        description=(module.__doc__ or "").strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_fields(parser, module.Config)
    if hasattr(module, "preset"):  # a preset sets the defaults; flags given with it win
        parser.add_argument("--preset", choices=module.PRESETS, help=module.preset.__doc__)
        chosen, _ = parser.parse_known_args(argv)
        if chosen.preset:
            parser.set_defaults(**module.preset(chosen.preset))
    if getattr(module, "MULTI_PROCESS", True):
        add_fields(parser.add_argument_group("multi-process runs"), cluster.ClusterFlags)
    namespace = parser.parse_args(argv)
    try:
        config = from_namespace(module.Config, namespace)
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    return config, from_namespace(cluster.ClusterFlags, namespace)  # defaults when absent


def fail(prog: str, err: BaseException) -> SystemExit:
    sys.stderr.write(f"{prog}: error: {err}\n")
    return SystemExit(1)


def run_application(name: str, argv: list[str] | None, prog: str | None = None) -> dict[str, Any]:
    """Parse, join the cluster, run; print the summary as one line of JSON (process 0)."""
    prog = prog or f"eggroll {name}"
    config, flags = parse(name, argv, prog)
    module = importlib.import_module(APPLICATIONS[name])
    cluster.start_cluster(flags)
    try:
        summary = cluster.run_guarded(lambda: module.run(config))
    except USER_ERRORS as err:
        raise fail(prog, err) from None
    if distributed.is_main_process():
        print(json.dumps(loop.jsonable(summary)), flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = [*APPLICATIONS, *EXTRA]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    name, rest = argv[0], argv[1:]
    if name in APPLICATIONS:
        run_application(name, rest)
        return 0
    if name in EXTRA:
        result = importlib.import_module(EXTRA[name]).main(rest, prog=f"eggroll {name}")
        return int(result or 0) if isinstance(result, int) else 0
    sys.stderr.write(f"eggroll: unknown command {name!r}; choose from {commands}\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
