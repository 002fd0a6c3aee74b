"""Regenerate the measured sections of docs/BENCHMARKS.md from results/*.json.

python scripts/bench.py report [--doc docs/BENCHMARKS.md] [--results-dir results]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eggroll.benchmarks import BENCHMARKS
from eggroll.benchmarks.common import SCRIPT, checkout_root, read_result, results_path

NAME = "report"
HELP = "rewrite docs/BENCHMARKS.md sections from results/"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--doc", default=str(checkout_root() / "docs" / "BENCHMARKS.md"))


def _machine(result: dict) -> str:
    m = result.get("machine", {})
    return (
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, jax {m.get('jax', '?')},"
        f" {m.get('date', '?')}."
    )


def run(args: argparse.Namespace) -> dict:
    """Regenerate the measured sections of ``args.doc`` from ``args.results_dir``/*.json.

    The file keeps everything outside the markers ``<!-- bench:NAME -->`` ...
    ``<!-- /bench:NAME -->``; each marked section is rewritten from results/NAME.json (a
    benchmark with ``--noise`` also has a section NAME-keys from NAME-keys.json)."""
    doc_path = Path(args.doc)
    doc = doc_path.read_text()
    sections = [
        (module.NAME, results_path(args.results_dir, module.NAME), module) for module in BENCHMARKS
    ]
    sections += [
        (f"{module.NAME}-keys", results_path(args.results_dir, module.NAME, keys=True), module)
        for module in BENCHMARKS
        if module.NOISE_VARIANT
    ]
    updated = []
    for name, path, module in sections:
        start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        if not path.exists() or start not in doc:
            continue
        result = read_result(path)
        default = f"{SCRIPT} {name}" if name == module.NAME else name
        command = result.get("command", default)
        body = f"`{command}`. {_machine(result)}\n\n{module.render(result)}"
        head, rest = doc.split(start, 1)
        doc = head + start + "\n" + body + "\n" + end + rest.split(end, 1)[1]
        updated.append(name)
    doc_path.write_text(doc)
    print(f"updated {', '.join(updated) or 'nothing'} in {doc_path}")
    return {"benchmark": NAME, "updated": updated}
