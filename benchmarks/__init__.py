"""Benchmarks: one module per benchmark, and the report generator.

Each benchmark module has ``NAME`` (its subcommand), ``HELP``, ``NOISE_VARIANT`` (it has a
``--noise`` flag, and a keys run keeps its own ``NAME-keys.json``), ``add_arguments(parser)``,
``run(args) -> dict`` (the result that goes to ``results/NAME.json``) and ``render(result) ->
str`` (its section of docs/BENCHMARKS.md). ``eggroll.benchmarks.cli.main`` is the command line
(``python scripts/bench.py ...``); ``eggroll.benchmarks.report`` rewrites the docs.
"""

from eggroll.benchmarks import (
    device_check,
    egg_scaling,
    int_noise,
    latency,
    llm_decode,
    lowrank_vs_naive,
    member_project,
    noise_default,
    scaling,
    vs_evosax,
    vs_inference,
)

# In the order of the command line's subcommands and of the report's sections.
BENCHMARKS = (
    lowrank_vs_naive,
    int_noise,
    member_project,
    vs_inference,
    scaling,
    egg_scaling,
    vs_evosax,
    latency,
    llm_decode,
    device_check,
    noise_default,
)
