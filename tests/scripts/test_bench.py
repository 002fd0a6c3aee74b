"""scripts/bench.py: `report` rewrites only the marked sections, keys runs keep their own file,
and the scaling sweep measures its inference reference (tiny sizes)."""

import argparse
import json

from tests.scripts.helpers import load_script

bench = load_script("bench")
MACHINE = {"cpu": "Test CPU", "cores": 2, "jax": "0.0", "date": "2026-01-01"}


def _lowrank_result(speedup: float, noise: str, command: str | None = None) -> dict:
    row = {
        "model": "dense",
        "width": 8,
        "population": 4,
        "rank": 1,
        "eggroll_ms": 1.0,
        "openes_ms": speedup,
        "speedup": speedup,
        "eggroll_mib": 1.0,
        "openes_mib": 2.0,
        "memory_ratio": 2.0,
    }
    result = {"benchmark": "lowrank-vs-naive", "machine": MACHINE, "noise": noise, "rows": [row]}
    if command:
        result["command"] = command
    return result


def test_report_rewrites_marked_sections_and_keeps_the_rest(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(bench, "RESULTS", results)
    keys_command = "python scripts/bench.py lowrank-vs-naive --noise keys --widths 8"
    (results / "lowrank-vs-naive.json").write_text(json.dumps(_lowrank_result(55.5, "table")))
    (results / "lowrank-vs-naive-keys.json").write_text(
        json.dumps(_lowrank_result(490.5, "keys", keys_command))
    )
    doc = tmp_path / "BENCHMARKS.md"
    lines = [
        "intro stays",
        "<!-- bench:lowrank-vs-naive -->",
        "old table",
        "<!-- /bench:lowrank-vs-naive -->",
        "middle stays",
        "<!-- bench:lowrank-vs-naive-keys -->",
        "<!-- /bench:lowrank-vs-naive-keys -->",
        "<!-- bench:scaling -->",
        "no result file: untouched",
        "<!-- /bench:scaling -->",
        "end stays",
    ]
    doc.write_text("\n".join(lines) + "\n")
    out = bench.report(argparse.Namespace(doc=str(doc)))
    assert out["updated"] == ["lowrank-vs-naive", "lowrank-vs-naive-keys"]
    text = doc.read_text()
    assert "old table" not in text
    for kept in ("intro stays", "middle stays", "no result file: untouched", "end stays"):
        assert kept in text
    table_section, keys_section = text.split("middle stays")
    assert "`python scripts/bench.py lowrank-vs-naive`. Machine: Test CPU" in table_section
    assert "| 55.5 |" in table_section and "490.5" not in table_section
    assert f"`{keys_command}`" in keys_section and "| 490.5 |" in keys_section


def test_scaling_reports_eggroll_and_its_inference_reference(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    args = argparse.Namespace(
        populations=[4, 8], widths=[8, 16], population=4, sweep_widths=[8, 16], noise="table",
        repeats=1,
    )  # fmt: skip
    result = bench.scaling(args)
    assert [sweep["width"] for sweep in result["population_sweeps"]] == [8, 16]
    for sweep in result["population_sweeps"]:
        assert len(sweep["ms"]) == len(sweep["inference_ms"]) == 2
        assert all(t > 0 for t in sweep["ms"] + sweep["inference_ms"])
        assert isinstance(sweep["inference_exponent"], float)
    (tmp_path / "scaling.json").write_text(json.dumps(result))
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("<!-- bench:scaling -->\n<!-- /bench:scaling -->\n")
    bench.report(argparse.Namespace(doc=str(doc)))
    text = doc.read_text()
    for width in (8, 16):  # each sweep renders as an EGGROLL row and an inference row
        assert f"| population, EGGROLL (width {width}) |" in text
        assert f"| population, inference (width {width}) |" in text
    assert "| width (population 4) |" in text
