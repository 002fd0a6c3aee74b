"""Train- vs test-split accuracy of a fine-tuning run: how much of its gain generalises.

    python scripts/llm_split_accuracy.py --run-dir runs/llm-compare/eggroll-seed0
    python scripts/llm_split_accuracy.py --run-dir runs/llm-compare/grpo-seed0 --method grpo
    python scripts/llm_split_accuracy.py --count 512 --run-dir RUN --task countdown

Give the run's own ``eggroll finetune`` flags (the checkpoint must match them) and optionally
``--count N`` (default 1024). Prints one JSON line: the greedy accuracy of the run's start
and of its last checkpoint on the first N problems of the task's train and test splits
(``eggroll.train.finetune.split_accuracy``).
"""

import argparse
import json
import sys

from eggroll.train import cli, finetune


def main(argv: list[str]) -> None:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--count", type=int, default=1024)
    args, rest = own.parse_known_args(argv)
    prog = "llm_split_accuracy.py"
    if args.count < 1:  # before any model is loaded
        own.prog = prog
        own.error(f"--count must be ≥ 1 (problems per split), got {args.count}")
    config, _ = cli.parse("finetune", rest, prog)
    try:
        result = finetune.split_accuracy(config, args.count, say=lambda *_: None)
    except cli.USER_ERRORS as err:
        raise cli.fail(prog, err) from None
    print(json.dumps({"run_dir": config.run_dir, "problems": args.count, **result}))


if __name__ == "__main__":
    main(sys.argv[1:])
