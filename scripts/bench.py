"""Benchmarks that print ratios measured side by side in one run: ``eggroll.benchmarks``.

    python scripts/bench.py {lowrank-vs-naive,int-noise,member-project,vs-inference,scaling,
                             vs-evosax,llm-decode,report} [flags]   # --help for each

Results go to ``results/<subcommand>.json`` in this checkout (ignored by git); docs/BENCHMARKS.md
records them with the command that produced them (``python scripts/bench.py report``).
"""

from eggroll.benchmarks.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
