"""Benchmarks that print ratios measured side by side in one run.

    python scripts/bench.py lowrank-vs-naive [--widths 256 1024] [--populations 1024] [--ranks 1]
    python scripts/bench.py int-noise          # integer noise: threefry keys vs seed-made table
    python scripts/bench.py member-project     # x @ A_i under vmap: batched dot vs block GEMM
    python scripts/bench.py vs-inference       # training as a share of inference throughput
    python scripts/bench.py scaling            # time per generation vs population and width
    python scripts/bench.py vs-evosax          # CartPole: evosax Open_ES vs ours (extra: bench)
    python scripts/bench.py llm-decode         # LLM decoding: N members vs the plain model
    python scripts/bench.py report             # rewrite docs/BENCHMARKS.md from results/*.json

Results go to ``results/<subcommand>.json`` (``results/<subcommand>-keys.json`` for a
``--noise keys`` run) in the source checkout, or under the current directory when the package
is installed elsewhere; ``--results-dir`` picks another folder (see
``eggroll.benchmarks.common``). Each file records the command that produced it;
docs/BENCHMARKS.md quotes them.
"""

from __future__ import annotations

import argparse
import sys

from eggroll.benchmarks import BENCHMARKS, report
from eggroll.benchmarks.common import SCRIPT, default_results_dir, results_path, write_result

COMMANDS = (*BENCHMARKS, report)


def build_parser(prog: str = "bench.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--results-dir",
        default=str(default_results_dir()),
        help="folder of the results files (default: %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        p = sub.add_parser(module.NAME, help=module.HELP, parents=[shared])
        module.add_arguments(p)
        p.set_defaults(run=module.run, module=module)
    return parser


def main(argv: list[str] | None = None, *, prog: str = "bench.py") -> int:
    """Run one benchmark (``argv``: a subcommand and its flags; default ``sys.argv[1:]``), print
    its lines and write its results file; or rewrite the docs with ``report``. ``prog`` names
    the command in the usage line and in the command each results file records (``bench.py``
    records ``python scripts/bench.py``). Returns 0; bad flags exit through argparse (2)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    for name, value in vars(args).items():  # sizes, counts and repeats: all must be ≥ 1
        values = value if isinstance(value, list) else [value]
        if all(type(v) is int for v in values) and any(v < 1 for v in values):
            parser.error(f"--{name.replace('_', '-')} must be ≥ 1, got {value}")
    result = args.run(args)
    if args.module is report:
        return 0
    result["command"] = " ".join([SCRIPT if prog == "bench.py" else prog, *argv])
    keys = args.module.NOISE_VARIANT and args.noise == "keys"
    write_result(results_path(args.results_dir, args.command, keys), result)
    return 0
