"""scripts/llm_finetune.py: EGGROLL on a synthetic task improves; the script's summary,
metrics, diagnostics, bitwise resume, the GRPO baseline and bad flags, at tiny size."""

import json
import os
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eggroll as egg
from eggroll.envs import reasoning
from eggroll.models import llm
from eggroll.models import tokenizer as tokenizer_lib
from tests.scripts.helpers import load_script

pytest.importorskip("tokenizers")

ft = load_script("llm_finetune")

TINY = [
    "--digits", "1", "--base-steps", "150", "--base-hidden", "16", "--base-layers", "1",
    "--base-batch", "16", "--prompts", "4", "--group", "4", "--eval-problems", "16",
    "--eval-every", "2", "--checkpoint-every", "2", "--seconds", "0", "--sigma", "0.01",
    "--lr", "0.001", "--format-weight", "1", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One model cache for the module: the tiny base model is pretrained once."""
    root = tmp_path_factory.mktemp("cache")
    old = os.environ.get("EGGROLL_CACHE")
    os.environ["EGGROLL_CACHE"] = str(root)
    yield root
    if old is None:
        del os.environ["EGGROLL_CACHE"]
    else:
        os.environ["EGGROLL_CACHE"] = old


@pytest.fixture(scope="module")
def straight(cache, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "straight"
    summary = ft.main([*TINY, "--generations", "4", "--run-dir", str(run_dir)])
    return run_dir, summary


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _leaves(path):
    """The state's leaves of a checkpoint file, without its metadata (timings differ)."""
    return [(leaf["path"], leaf["data"]) for leaf in egg.checkpoint.read(path)["leaves"]]


class AnyDigit(reasoning.Task):
    """Synthetic: answer any single digit. A random tiny model almost never does at first."""

    name = "any-digit"

    def sample(self, split, count, rng):
        return [reasoning.Problem(f"q{d}=", "7", Fraction(7)) for d in rng.integers(0, 10, count)]

    def reward(self, problem, completion):
        return reasoning.Reward(float(completion[:1].isdigit()), float(len(completion) == 1))


def test_eggroll_improves_a_synthetic_task_with_fixed_seeds():
    config = llm.tiny_byte_config(
        hidden_size=16, num_layers=1, intermediate_size=32, num_heads=2, num_kv_heads=1
    )
    cfg = ft.FinetuneConfig(
        prompts=8, group=8, sigma=0.05, lr=0.01, max_new_tokens=2, eval_problems=8
    )
    task, tokenizer = AnyDigit(), tokenizer_lib.byte_level()
    enc = ft.make_encoding(task, tokenizer, config, cfg)
    es = ft.make_strategy(cfg)
    state = es.init(jax.random.key(1), llm.init_params(jax.random.key(0), config))
    rollout = ft.make_eggroll_rollout(es, config, enc, 0.0)
    rewards = []
    for generation in range(40):
        problems = task.sample("train", 8, np.random.default_rng([0, generation]))
        ids, masks = enc.prompts(problems)
        tokens = rollout(state, np.repeat(ids, 8, 0), np.repeat(masks, 8, 0), jax.random.key(0))
        members = [p for p in problems for _ in range(8)]
        correct, fmt = task.rewards(members, enc.completions(np.asarray(tokens)))
        stats = ft.diagnostics(np.asarray(tokens), correct, fmt, correct, 8)
        assert all(0.0 <= v <= 1.0 for v in stats.values())
        state, info = es.tell(state, jnp.asarray(correct))
        rewards.append(stats["correct_mean"])
        assert float(info["update_norm_full"]) == 0.0  # vectors frozen
    assert np.mean(rewards[:5]) < 0.05
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.3, rewards


def test_diagnostics_count_identical_pairs_and_groups_with_signal():
    tokens = np.array([[1, 2], [1, 2], [3, 4], [3, 5], [7, 7], [7, 7], [7, 7], [7, 7]])
    correct = np.array([1, 1, 1, 0, 0, 0, 0, 0], np.float32)
    fmt = np.ones(8, np.float32)
    stats = ft.diagnostics(tokens, correct, fmt, correct, group=4)
    assert stats == {
        "correct_mean": 0.375,
        "format_mean": 1.0,
        "identical_pairs": 0.75,
        "signal_groups": 0.5,
    }
    # The shaping that goes with it: a group whose answers all scored alike gets zero weight.
    shaped = np.asarray(ft.make_strategy(ft.FinetuneConfig(prompts=2, group=4)).shaping(correct))
    np.testing.assert_array_equal(shaped[4:], 0.0)
    assert shaped[3] < 0 < shaped[0] and abs(shaped[:4].sum()) < 1e-6


def test_script_writes_summary_metrics_checkpoint_and_curve(straight, cache, capsys):
    run_dir, summary = straight
    for key in ("task", "start_accuracy", "final_accuracy", "generations", "wall_seconds"):
        assert key in summary
    assert summary["task"] == "arithmetic" and summary["generations"] == 4
    assert 0.0 <= summary["start_accuracy"] <= 1.0 and 0.0 <= summary["final_accuracy"] <= 1.0
    assert json.loads((run_dir / "summary.json").read_text())["generations"] == 4
    records = _records(run_dir)
    assert [r["generation"] for r in records if "eval_accuracy" in r] == [0, 2, 4]
    train = [r for r in records if "correct_mean" in r]
    assert [r["generation"] for r in train] == [1, 2, 3, 4]
    for r in train:
        for key in ("correct_mean", "format_mean", "identical_pairs", "signal_groups"):
            assert 0.0 <= r[key] <= 1.0
    assert all(r["update_norm_lowrank"] > 0 for r in train)  # the parameters do move
    assert all(r["update_norm_full"] == 0 for r in train)  # vectors are frozen
    assert (run_dir / "checkpoint.msgpack").exists() and (run_dir / "curve.png").exists()
    (base,) = (cache / "models").iterdir()  # made once, then reused by every run
    assert (base / "config.json").exists() and (base / "eggroll_base.json").exists()


def test_resume_continues_bitwise(straight, tmp_path):
    run_dir, summary = straight
    split = tmp_path / "split"
    ft.main([*TINY, "--generations", "2", "--run-dir", str(split)])
    resumed = ft.main([*TINY, "--generations", "4", "--run-dir", str(split), "--resume"])
    assert resumed["generations"] == 4
    assert resumed["start_accuracy"] == summary["start_accuracy"]
    assert resumed["final_accuracy"] == summary["final_accuracy"]
    assert _leaves(split / "checkpoint.msgpack") == _leaves(run_dir / "checkpoint.msgpack")
    drop = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [drop(r) for r in _records(split)] == [drop(r) for r in _records(run_dir)]
    with pytest.raises(SystemExit, match="pass --resume"):  # never overwrites a run
        ft.main([*TINY, "--generations", "6", "--run-dir", str(split)])
    with pytest.raises(SystemExit, match="cannot resume.*lr"):  # nor resumes other settings
        ft.main([*TINY, "--generations", "6", "--run-dir", str(split), "--resume", "--lr", "0.1"])


def test_grpo_baseline_runs_on_the_same_task(cache, tmp_path):
    summary = ft.main(
        [*TINY, "--method", "grpo", "--generations", "2", "--run-dir", str(tmp_path / "grpo")]
    )
    assert summary["method"] == "grpo" and summary["generations"] == 2
    records = [r for r in _records(tmp_path / "grpo") if "loss" in r]
    assert len(records) == 2 and all(r["grad_norm"] >= 0 for r in records)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--method", "cma"], "--method must be one of"),
        (["--task", "sudoku"], "--task must be one of"),
        (["--group", "3"], "--group must be even for eggroll"),
        (["--group", "1", "--method", "grpo"], "--group must be ≥ 2"),
        (["--sigma", "0"], "--sigma must be > 0"),
        (["--optimizer", "lion"], "--optimizer must be one of"),
        (["--generations", "0", "--seconds", "0"], "give a budget"),
        (["--task", "gsm8k"], "needs --data"),
        (["--data", "x.jsonl"], "are for --task gsm8k"),
        (["--digits", "0"], "digits must be an integer"),
        (["--ops", "/"], "ops must be"),
        (["--temperature", "-1"], "--temperature must be ≥ 0"),
        (["--method", "grpo", "--temperature", "0"], "use --temperature > 0"),
    ],
)
def test_bad_flags_exit_with_a_message(flags, message, capsys):
    with pytest.raises(SystemExit):
        ft.main(flags)
    assert message in capsys.readouterr().err


def test_missing_gsm8k_file_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="not found"):
        ft.main(["--task", "gsm8k", "--data", str(tmp_path / "none.jsonl"), "--no-progress"])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--grpo-args", "--lr -1"], "--lr must be > 0"),  # the second run's flags, checked first
        (["--methods", "eggroll", "ppo"], "unknown ['ppo']"),
    ],
)
def test_compare_rejects_bad_flags_before_any_run(flags, message, tmp_path, capsys):
    compare = load_script("llm_compare")
    with pytest.raises(SystemExit):
        compare.main([*flags, "--runs", str(tmp_path / "runs")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written
