"""The fine-tuning comparison over seeds (``eggroll compare finetune``) and the shipped base
models: one JSON line per (method, seed) cell, resume, a torn last line, the report's
statistics; each shipped model starts at the accuracy its eggroll_base.json records, and the
default recipe uses it without training."""

import itertools
import json

import numpy as np
import pytest

from eggroll.train import compare, finetune
from tests.train.test_finetune import TINY_FLAGS

pytest.importorskip("tokenizers")


def quiet(*_):
    pass


def compare_argv(tmp_path, *extra):
    return [
        "finetune", "--generations", "2", "--seconds", "0", "--seeds", "0", "1",
        "--common-args", " ".join(TINY_FLAGS), "--runs", str(tmp_path / "runs"),
        "--results", str(tmp_path / "cells.jsonl"), *extra,
    ]  # fmt: skip


def lines(path):
    return path.read_text().splitlines()


def test_the_seed_loop_writes_one_line_per_cell_and_resumes(tmp_path, monkeypatch, capsys):
    results = tmp_path / "cells.jsonl"
    cells = compare.main(compare_argv(tmp_path))
    assert [(c["method"], c["seed"]) for c in cells] == [
        ("eggroll", 0), ("grpo", 0), ("eggroll", 1), ("grpo", 1),
    ]  # fmt: skip
    assert [json.loads(line) for line in lines(results)] == cells
    for cell in cells:
        assert cell["generations"] == 2 and cell["budget_generations"] == 2
        assert cell["run_dir"] == str(tmp_path / "runs" / f"{cell['method']}-seed{cell['seed']}")
        assert cell["gain"] == round(cell["final_accuracy"] - cell["start_accuracy"], 4)
        assert [p[1] for p in cell["curve"]] == [0, 2]  # held-out evaluations: start, end
        assert cell["diagnostics_curve"]["step"] == [1, 2]
        assert cell["base_model"] == "made here" and not cell["resumed"]
    for suffix in (".md", ".summary.json", ".png"):
        assert results.with_suffix(suffix).exists()
    # The same command again trains nothing; a torn last line (a killed run) is cut off.
    monkeypatch.setattr(finetune, "run", lambda *a, **k: pytest.fail("a cell ran again"))
    with open(results, "a") as handle:
        handle.write('{"method": "eggroll", "seed": 2, "task_set')
    assert compare.main(compare_argv(tmp_path)) == cells
    assert [json.loads(line) for line in lines(results)] == cells
    # --max-minutes: no cell starts after the limit (a clock that jumps 100 s per reading).
    monkeypatch.setattr(compare.time, "monotonic", itertools.count(0.0, 100.0).__next__)
    capsys.readouterr()
    assert compare.main(compare_argv(tmp_path, "--seeds", "0", "1", "2", "--max-minutes", "1"))
    assert "--max-minutes reached" in capsys.readouterr().out
    assert len(lines(results)) == 4


def cell(method, seed, start, final, identical=0.5):
    return {
        "method": method, "seed": seed, "task": "arithmetic",
        "task_settings": {"task": "arithmetic", "digits": 2, "ops": "+"},
        "budget_seconds": 1200.0, "budget_generations": 0, "flags": [],
        "start_accuracy": start, "final_accuracy": final, "best_accuracy": final,
        "gain": round(final - start, 4), "generations": 100 * (seed + 1),
        "seconds_per_generation": 0.1, "base_model": "shipped", "machine": "test machine",
        "diagnostics": {"last_10pct": {"identical_pairs": identical, "signal_groups": 0.25}},
        "curve": [[0.0, 0, start], [600.0, 50, final]],
        "diagnostics_curve": {"seconds": [300.0, 600.0], "identical_pairs": [identical] * 2},
    }  # fmt: skip


def test_the_report_gives_the_mean_and_std_of_the_gain_over_seeds(tmp_path):
    results = tmp_path / "cells.jsonl"
    cells = [
        cell("eggroll", 0, 0.25, 0.35, identical=0.4),
        cell("grpo", 0, 0.25, 0.30),
        cell("eggroll", 1, 0.25, 0.45, identical=0.6),
        cell("eggroll", 2, 0.25, 0.55, identical=0.8),
    ]
    results.write_text("".join(json.dumps(c) + "\n" for c in cells) + '{"method": "eggr')
    eggroll, grpo = compare.main(["finetune", "--report-only", "--results", str(results)])
    assert len(lines(results)) == 4  # the torn line is cut off the file
    assert eggroll["method"] == "eggroll" and eggroll["n"] == 3 and eggroll["seeds"] == [0, 1, 2]
    assert eggroll["gain"] == {"mean": 0.2, "std": 0.1}  # gains 0.1, 0.2, 0.3; n − 1
    assert eggroll["final_accuracy"] == {"mean": 0.45, "std": 0.1}
    assert eggroll["start_accuracy"] == {"mean": 0.25, "std": 0.0}
    assert eggroll["generations"] == 200 and eggroll["seconds_per_generation"] == 0.1
    assert eggroll["diagnostics_last_10pct"] == {"identical_pairs": 0.6, "signal_groups": 0.25}
    assert grpo["n"] == 1 and grpo["gain"] == {"mean": 0.05, "std": None}
    table = results.with_suffix(".md").read_text()
    assert "| eggroll | 3 | 1200 s | 0.250 ± 0.000 | 0.450 ± 0.100 | 0.200 ± 0.100 |" in table
    assert "| grpo | 1 | 1200 s | 0.250 ± – | 0.300 ± – | 0.050 ± – |" in table
    summary = json.loads(results.with_suffix(".summary.json").read_text())
    assert summary["rows"][0]["gain"] == {"mean": 0.2, "std": 0.1}
    assert results.with_suffix(".png").stat().st_size > 0
    assert np.isclose(np.std([0.1, 0.2, 0.3], ddof=1), 0.1)


def shipped():
    folders = sorted(p for p in finetune.SHIPPED_MODELS.iterdir() if p.is_dir())
    assert {f.name.split("-")[1] for f in folders} == {"arithmetic", "countdown"}
    return folders


TASK_FLAGS = {"digits": "digits", "ops": "ops", "count": "numbers"}
TASK_FLAGS.update(max_number="max_number", max_target="max_target")


@pytest.mark.parametrize("folder", shipped(), ids=lambda f: f.name)
def test_a_shipped_base_model_starts_at_its_recorded_accuracy(folder):
    info = json.loads((folder / finetune.BASE_INFO).read_text())
    settings = {TASK_FLAGS[k]: v for k, v in info.items() if k in TASK_FLAGS}
    default = finetune.Config(task=info["task"], progress=False)
    assert finetune.base_model_name(default, default.make_task()) == folder.name
    assert {k: getattr(default, k) for k in settings} == settings  # the task's defaults
    # Loads the folder (--model): nothing is trained. Few members: evaluation is the same.
    config = finetune.Config(
        task=info["task"], model=str(folder), eval_problems=128, prompts=2, group=2,
        progress=False,
    )  # fmt: skip
    measured = finetune.start_evaluation(config, say=quiet)
    # The weights are the same bits everywhere, but the float math of greedy decoding is not:
    # an argmax tie can flip on another CPU kind, so allow 2 of the 128 problems to differ.
    recorded = info["start_accuracy"]["128"]
    assert abs(measured["eval_accuracy"] - recorded) * 128 <= 2 + 1e-6, (measured, recorded)
    assert 0.05 <= recorded <= 0.4  # weak but not at zero: room to improve


def test_the_default_recipe_uses_the_shipped_model_without_training(monkeypatch, eggroll_cache):
    monkeypatch.setattr(finetune, "train_base_model", lambda *a: pytest.fail("trained"))
    for task, steps in (("arithmetic", 1500), ("countdown", 700)):
        config = finetune.Config(task=task)
        assert config.base_steps == steps  # the task's default
        folder = finetune.ensure_base_model(config, config.make_task(), quiet)
        assert folder.parent == finetune.SHIPPED_MODELS and folder in shipped()
        assert finetune.base_model_source(folder) == "shipped"
    assert finetune.Config(task="countdown", base_steps=5).base_steps == 5
    assert not (eggroll_cache / "models" / folder.name).exists()  # nothing copied
    other = finetune.Config(task="arithmetic", base_steps=10)  # another recipe: not shipped
    assert finetune.shipped_base_model(other, other.make_task()) is None
