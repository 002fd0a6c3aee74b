"""eggroll.benchmarks: `report` rewrites only the marked sections, keys runs keep their own file,
the scaling sweep measures its inference reference, and the command line runs a benchmark end to
end into --results-dir (tiny sizes)."""

import argparse
import json

import pytest

from eggroll.benchmarks import cli, report, scaling

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


def test_report_rewrites_marked_sections_and_keeps_the_rest(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
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
    out = report.run(argparse.Namespace(doc=str(doc), results_dir=str(results)))
    assert out["updated"] == ["lowrank-vs-naive", "lowrank-vs-naive-keys"]
    text = doc.read_text()
    assert "old table" not in text
    for kept in ("intro stays", "middle stays", "no result file: untouched", "end stays"):
        assert kept in text
    table_section, keys_section = text.split("middle stays")
    assert "`python scripts/bench.py lowrank-vs-naive`. Machine: Test CPU" in table_section
    assert "| 55.5 |" in table_section and "490.5" not in table_section
    assert f"`{keys_command}`" in keys_section and "| 490.5 |" in keys_section


def test_scaling_reports_eggroll_and_its_inference_reference(tmp_path):
    args = argparse.Namespace(
        populations=[4, 8], widths=[8, 16], population=4, sweep_widths=[8, 16], noise="table",
        repeats=1, results_dir=str(tmp_path),
    )  # fmt: skip
    result = scaling.run(args)
    assert [sweep["width"] for sweep in result["population_sweeps"]] == [8, 16]
    for sweep in result["population_sweeps"]:
        assert len(sweep["ms"]) == len(sweep["inference_ms"]) == 2
        assert all(t > 0 for t in sweep["ms"] + sweep["inference_ms"])
        assert isinstance(sweep["inference_exponent"], float)
    assert (tmp_path / "scaling.png").is_file()
    (tmp_path / "scaling.json").write_text(json.dumps(result))
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("<!-- bench:scaling -->\n<!-- /bench:scaling -->\n")
    report.run(argparse.Namespace(doc=str(doc), results_dir=str(tmp_path)))
    text = doc.read_text()
    for width in (8, 16):  # each sweep renders as an EGGROLL row and an inference row
        assert f"| population, EGGROLL (width {width}) |" in text
        assert f"| population, inference (width {width}) |" in text
    assert "| width (population 4) |" in text


def test_cli_writes_keys_run_to_its_own_file_with_its_command(tmp_path, capsys):
    argv = ["lowrank-vs-naive", "--noise", "keys", "--models", "dense", "--widths", "8"]
    argv += ["--populations", "4", "--ranks", "1", "--repeats", "1", "--results-dir", str(tmp_path)]
    assert cli.main(argv, prog="eggroll bench") == 0
    assert [p.name for p in tmp_path.iterdir()] == ["lowrank-vs-naive-keys.json"]
    result = json.loads((tmp_path / "lowrank-vs-naive-keys.json").read_text())
    assert result["command"] == " ".join(["eggroll bench", *argv])
    assert result["noise"] == "keys" and len(result["rows"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("dense width     8 pop     4 rank 1  EGGROLL")
    assert out.endswith(f"wrote {tmp_path / 'lowrank-vs-naive-keys.json'}\n")


def test_cli_int_noise_runs_the_egg_lm(tmp_path):
    argv = ["int-noise", "--population", "4", "--width", "8", "--layers", "1", "--seq-len", "4"]
    argv += ["--member-batch", "2", "--repeats", "1", "--results-dir", str(tmp_path)]
    assert cli.main(argv) == 0
    result = json.loads((tmp_path / "int-noise.json").read_text())
    assert result["command"] == " ".join(["python scripts/bench.py", *argv])
    assert [row["noise"] for row in result["rows"]] == ["keys", "table"]
    assert result["rows"][0]["state_noise_bytes"] == 0 < result["rows"][1]["state_noise_bytes"]


def test_cli_llm_decode_gives_one_row_per_layer_count_with_memory_and_compile(tmp_path):
    argv = ["llm-decode", "--models", "llama-tiny", "--members", "2", "--batch", "1"]
    argv += ["--prompt-len", "3", "--new-tokens", "2", "--layers", "1", "2", "--repeats", "1"]
    argv += ["--results-dir", str(tmp_path)]
    assert cli.main(argv) == 0
    result = json.loads((tmp_path / "llm-decode.json").read_text())
    assert [(row["layers"], row["members"]) for row in result["rows"]] == [(1, 2), (2, 2)]
    for row in result["rows"]:
        assert row["sequences"] == 2 and row["eggroll_tok_s"] > 0 and row["plain_tok_s"] > 0
        assert row["compile_s"] > 0 and row["plain_compile_s"] > 0
        assert row["xla_bytes"] > 0 and row["peak_rss_bytes"] > 0
    one, two = result["rows"]
    assert two["xla_bytes"] > one["xla_bytes"]  # the second layer's weights are arguments
    assert "1 layers" in result["model"] and "2 layers" in result["model"]


def test_cli_rejects_sizes_below_one(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["member-project", "--widths", "8", "0", "--results-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--widths must be ≥ 1, got [8, 0]" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_latency_renders_its_tables(tmp_path):
    from eggroll.benchmarks import latency

    rows = [
        {"contender": name, "compile_gen_s": 1.0, "compile_mean_s": 0.5, "ms_per_generation": 2.0}
        for name in latency.CONTENDERS
    ]
    result = {
        "problems": {"mlp": {"population": 8, "rows": rows}},
        "rank": [{"problem": "p", "rank1_ms": 1.0, "rank4_ms": 1.2, "rank4_over_rank1": 1.2}],
        "egg": {"size": "tiny", "compile_step_s": 3.0},
        "egg_before_s": 4.0,
    }
    text = latency.render(result)
    assert "evosax Open_ES" in text and "| 1.2 |" in text and "before this change: 4.0 s" in text


def test_latency_rank_rows_run_small():
    from eggroll.benchmarks import latency

    rows = latency.rank_rows([8], 1)
    assert rows[0]["rank1_ms"] > 0 and rows[0]["rank4_over_rank1"] > 0
    assert rows[0]["macs_rank4_over_rank1"] > 1


def test_generation_macs_count_the_forward_members_and_estimator():
    from eggroll.benchmarks import latency

    # One 3 × 2 layer, N = 4, one row each, rank 1: forward 4·6, members 4·1·5, estimator 2·6.
    assert latency.generation_macs([(3, 2)], 4, 1, 1) == 24 + 20 + 12
    # Rank above the layer's width is capped as EGGROLL caps it.
    assert latency.generation_macs([(3, 2)], 4, 4, 1) == latency.generation_macs([(3, 2)], 4, 2, 1)
