"""eggroll.benchmarks.egg_scaling: the EGG population sweep at a tiny size through the command
line (a cell's timings and memory figures, the goals), --resume measuring only the missing
populations and refusing other settings, and render's goal lines."""

import json

import pytest

from eggroll.benchmarks import cli, egg_scaling

TINY = ["--width", "8", "--layers", "1", "--tokens", "2", "--member-batch", "4", "--repeats", "1"]


def _run(tmp_path, *flags):
    argv = ["egg-scaling", *TINY, "--flat-from", "8", "--results-dir", str(tmp_path), *flags]
    assert cli.main(argv) == 0
    return json.loads((tmp_path / "egg-scaling.json").read_text())


def _earlier_run(tmp_path) -> dict:
    """A results file of an earlier, interrupted run with these settings that measured N = 16
    (made up: one compile of the step is most of this test's time)."""
    args = cli.build_parser().parse_args(["egg-scaling", *TINY, "--results-dir", str(tmp_path)])
    cell = _cell(16, 1000.0, 2000.0)
    earlier = {"benchmark": "egg-scaling", "settings": egg_scaling.settings(args), "rows": [cell]}
    (tmp_path / "egg-scaling.json").write_text(json.dumps(earlier))
    return cell


def test_resume_measures_only_missing_populations(tmp_path, capsys):
    earlier = _earlier_run(tmp_path)
    first = _run(tmp_path, "--populations", "8", "16", "--resume")
    out = capsys.readouterr().out
    assert out.count("done (in ") == 1 and out.count("measuring") == 1
    assert "N=     8  measuring" in out and "N=     8  train" in out
    assert first["benchmark"] == "egg-scaling" and first["complete"]
    assert first["command"].startswith("python scripts/bench.py egg-scaling --width 8")
    assert first["settings"]["width"] == 8 and first["settings"]["tokens_per_member"] == 2
    assert first["settings"]["member_slice"] == 4 and first["settings"]["layers"] == 1
    assert [r["population"] for r in first["rows"]] == [8, 16]
    row, kept = first["rows"]
    assert {k: v for k, v in kept.items() if "marginal" not in k} == earlier
    assert row["timed"] and len(row["train_times_s"]) == len(row["inference_times_s"]) == 1
    assert row["tokens_per_generation"] == 16 and row["streams"] == 4
    assert row["train_tokens_per_s"] > 0 and row["inference_tokens_per_s"] > 0
    ratio = row["train_tokens_per_s"] / row["inference_tokens_per_s"]
    assert row["train_over_inference"] == pytest.approx(ratio, abs=1e-3)
    xla = row["xla_train_bytes"]
    assert xla["total"] == xla["argument"] + xla["output"] + xla["temp"] - xla["alias"] > 0
    assert row["xla_train_bytes_per_member"] == round(xla["total"] / 8, 1)
    assert row["xla_inference_bytes"]["total"] > 0 and row["peak_rss_bytes"] > 0
    goals = first["goals"]
    assert goals["flatness"]["populations"] == [8, 16]
    assert goals["share"]["at_population"] in (8, 16)
    text = egg_scaling.render(first)
    assert "| 8 |" in text and "| 16 |" in text
    assert "Flat training tokens/s over N = 8..65536 (max/min ≤ 1.15): **" in text
    assert "Training ≥ 80 % of inference tokens/s at every population: **" in text

    # Every cell is done: the next run measures nothing and keeps them as they were.
    second = _run(tmp_path, "--populations", "8", "16", "--resume")
    out = capsys.readouterr().out
    assert out.count("done (in ") == 2 and "measuring" not in out
    assert second["rows"] == first["rows"] and second["command"].endswith("--resume")

    # Other settings: refused before anything is measured, the file left as it was.
    argv = ["egg-scaling", "--width", "16", "--layers", "1", "--tokens", "2", "--resume"]
    with pytest.raises(SystemExit, match="--resume: .* was measured with"):
        cli.main([*argv, "--populations", "8", "--results-dir", str(tmp_path)])
    assert json.loads((tmp_path / "egg-scaling.json").read_text()) == second


def _cell(population: int, train: float, infer: float, timed: bool = True) -> dict:
    cell = {
        "population": population,
        "timed": timed,
        "xla_train_bytes": {"total": 1000 + 10 * population},
        "xla_train_bytes_per_member": round((1000 + 10 * population) / population, 1),
        "peak_rss_bytes": 2**30,
    }
    if timed:
        cell.update(
            train_tokens_per_s=train,
            inference_tokens_per_s=infer,
            train_over_inference=round(train / infer, 3),
            train_s=1.0,
            inference_s=1.0,
        )
    return cell


def test_render_states_each_goal_with_its_numbers():
    rows = [_cell(1024, 900, 1000), _cell(4096, 1000, 1100), _cell(16384, 800, 1000)]
    rows.append(_cell(65536, 0, 0, timed=False))
    egg_scaling.marginal_bytes(rows)
    assert [r["xla_train_marginal_bytes_per_member"] for r in rows] == [None, 10.0, 10.0, 10.0]
    settings = {"layers": 6, "width": 256, "tokens_per_member": 100, "member_slice": 32}
    result = {
        "settings": {**settings, "backend": "cpu"},
        "repeats": 2,
        "warmup_max_population": 4096,
        "complete": False,
        "goals": egg_scaling.goals(rows, egg_scaling.FLAT_FROM),
        "rows": rows,
    }
    text = egg_scaling.render(result)
    # flatness over 4096 and 16384 only: 1000 / 800 = 1.25 > 1.15
    assert "(max/min ≤ 1.15): **not met**, max/min = 1.250 over N = 4096, 16384." in text
    assert "**met**, lowest 80.0 % (N = 16384)." in text  # 0.8 is the goal itself
    assert "| 65536 | (compiled only) |" in text and "Partial" in text
    rows = [_cell(1024, 500, 1000), _cell(4096, 1000, 1100)]
    result["goals"] = egg_scaling.goals(rows, egg_scaling.FLAT_FROM)
    text = egg_scaling.render(result)
    assert "**not measured** (fewer than two timed populations there)" in text
    assert "**not met**, lowest 50.0 % (N = 1024)." in text
