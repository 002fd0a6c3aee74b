"""``python -m eggroll.benchmarks <subcommand> ...``: the same as ``python scripts/bench.py``."""

from eggroll.benchmarks.cli import main

raise SystemExit(main(prog="python -m eggroll.benchmarks"))
