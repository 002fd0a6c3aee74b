"""eggroll.benchmarks.noise_default: the --quick run measures every section for both noise
sources and renders; the helpers (a strategy rebuilt with another source, the slice-overlap
probability, the not-worse rule) are right."""

import itertools
import json

import jax.numpy as jnp
import pytest

import eggroll as egg
from eggroll.benchmarks import BENCHMARKS, cli, noise_default

SOURCES = ["keys", "table"]


def test_quick_run_measures_both_sources_in_every_section(tmp_path, capsys):
    argv = ["noise-default", "--quick", "--results-dir", str(tmp_path)]
    assert cli.main(argv) == 0
    result = json.loads((tmp_path / "noise-default.json").read_text())
    assert result["benchmark"] == "noise-default" and result["quick"] is True
    assert len(result["engine_sha256"]) == 12
    assert result["command"].startswith("python scripts/bench.py noise-default --quick")
    # (a) speed: keys, table and the exact alternative, each against inference and the table
    speed = result["rows"]
    assert [r["noise"] for r in speed] == ["keys", "table", "keys-np"]
    for row in speed:
        assert row["generation_ms"] > 0 and row["inference_ms"] > 0 and row["x_inference"] > 0
    assert next(r for r in speed if r["noise"] == "table")["over_table"] == 1.0
    # (b) RL and (c) classification: both sources at equal generations, mean ± std over seeds
    assert [(r["env"], r["noise"]) for r in result["rl"]] == [("CartPole-v1", s) for s in SOURCES]
    assert len({r["generations"] for r in result["rl"]}) == 1
    for row in result["rl"]:
        assert len(row["final"]) == len(row["last"]) == result["seeds"]
        assert len(row["final_mean_std"]) == 2 and row["ms_per_generation"] > 0
    assert [r["noise"] for r in result["classification"]] == SOURCES
    for row in result["classification"]:
        assert all(0 <= acc <= 1 for acc in row["test"]) and len(row["test"]) == result["seeds"]
    # (d) the estimator
    est = result["estimator"]
    assert est["table"]["table_size"] == egg.EGGROLL(2, sigma=1.0).table_size
    assert est["table"]["covariance_eig_min"] <= 1 <= est["table"]["covariance_eig_max"]
    assert {r["model"].split(",")[0] for r in est["overlap"]} == {
        "reference MLP",
        "CartPole-v1 policy",
        "classifier",
    }
    assert all(0 <= r["p_overlap_largest"] <= 1 for r in est["overlap"])
    assert [r["noise"] for r in est["correlation"]] == SOURCES
    for row in est["correlation"]:
        assert 0 < row["mean_abs_corr"] <= row["max_abs_corr"] <= 1
    assert "overlapping_pairs" in est["correlation"][1]
    cosines = [(r["strategy"], r["noise"]) for r in est["linear_cosine"]]
    assert cosines == list(itertools.product(["EGGROLL"], SOURCES))
    assert all(-1 <= r["cosine_mean"] <= 1 for r in est["linear_cosine"])
    assert [r["noise"] for r in est["quartic_gap"]] == SOURCES
    assert set(result["table_not_worse"]) >= {"CartPole-v1", "classification"}
    assert isinstance(result["table_learns_as_well"], bool)
    text = noise_default.render(result)
    for heading in ("Speed", "RL", "Classification", "Correlation", "Estimator", "Quartic"):
        assert heading in text
    assert "| 64 | keys |" in text and "| 64 | table |" in text
    out = capsys.readouterr().out
    assert "table not worse than keys" in out


def test_registered_last_with_the_cli_conventions():
    assert BENCHMARKS[-1] is noise_default
    assert noise_default.NAME == "noise-default" and noise_default.NOISE_VARIANT is False


def test_with_noise_keeps_everything_but_the_source():
    from eggroll.train import rl

    hp = rl.Config(env="CartPole-v1").hyperparameters()
    params = {"w0": jnp.zeros((4, 64)), "b0": jnp.zeros(64), "w1": jnp.zeros((64, 2))}
    for original in (rl.make_strategy("eggroll", hp), rl.make_strategy("openes", hp)):
        for source in SOURCES:
            es = noise_default.with_noise(original, source)
            assert type(es) is type(original) and es.noise == source
            drop = ("noise", "table_size")
            assert {k: v for k, v in es.config().items() if k not in drop} == {
                k: v for k, v in original.config().items() if k not in drop
            }
            assert es.optimizer is original.optimizer and es.shaping is original.shaping
            kinds = [s.kind for s in es.leaf_specs(params)]
            assert kinds == [s.kind for s in original.leaf_specs(params)]


@pytest.mark.parametrize("table, draw", [(40, 7), (50, 1), (30, 30), (64, 20)])
def test_overlap_probability_matches_enumeration(table, draw):
    offsets = range(table - draw + 1)
    hits = sum(abs(a - b) < draw for a in offsets for b in offsets)
    expected = hits / len(offsets) ** 2
    assert noise_default.overlap_probability(draw, table) == pytest.approx(expected)


def test_not_worse_rule():
    assert noise_default.not_worse((100.0, 5.0), (120.0, 1.0))  # better
    assert noise_default.not_worse((100.0, 5.0), (92.0, 4.0))  # intervals overlap
    assert not noise_default.not_worse((100.0, 1.0), (90.0, 1.0))  # clearly worse


def _rl_row(env, noise, final, last, all_):
    return {
        "env": env, "noise": noise, "generations": 10, "population": 8, "final": [final],
        "last": [last], "final_mean_std": [final, 1.0], "last_mean_std": [last, 1.0],
        "all_mean_std": [all_, 1.0], "ms_per_generation": 1.0,
    }  # fmt: skip


def test_verdict_and_render_cover_only_the_sections_run():
    result = {
        "benchmark": "noise-default",
        "seeds": 1,
        "rows": [],
        "rl": [
            _rl_row("Pendulum-v1", "keys", -500.0, -510.0, -900.0),
            _rl_row("Pendulum-v1", "table", -650.0, -660.0, -950.0),
            _rl_row("CartPole-v1", "keys", 500.0, 500.0, 470.0),
            _rl_row("CartPole-v1", "table", 500.0, 500.0, 471.0),
        ],
    }
    decision = noise_default.verdict(result)
    assert decision == {
        "table_not_worse": {"Pendulum-v1": False, "CartPole-v1": True},
        "table_learns_as_well": False,
    }
    text = noise_default.render({**result, **decision})
    assert "Speed" not in text and "Classification" not in text and "Estimator" not in text
    assert "| Pendulum-v1 | table | 10 | 8 | -650.0 ± 1.0 |" in text
    assert text.endswith("Pendulum-v1: NO, CartPole-v1: yes")
