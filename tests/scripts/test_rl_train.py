"""scripts/rl_train.py: learning progress on CartPole, summary, resume, bad flags."""

import json

import pytest

from tests.scripts.helpers import load_script

pytest.importorskip("gymnax")

rl_train = load_script("rl_train")

FAST = [
    "--population",
    "64",
    "--hidden",
    "16",
    "--eval-every",
    "2",
    "--no-progress",
    "--max-steps",
    "200",
]


def test_cartpole_learns_well_above_random(tmp_path):
    summary = rl_train.main(
        ["--env", "CartPole-v1", "--run-dir", str(tmp_path / "run"), "--generations", "12", *FAST]
    )
    records = [
        json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n") if x
    ]
    first_eval = next(r["eval_return"] for r in records if "eval_return" in r)
    # A random/initial policy balances ~10-40 steps; the learned one far longer (cap 200).
    assert summary["eval_return"] >= 150, summary
    assert summary["eval_return"] > first_eval + 50
    for key in (
        "env",
        "strategy",
        "eval_return",
        "eval_return_std",
        "env_steps",
        "generations",
        "wall_seconds",
        "env_steps_per_second",
    ):
        assert key in summary
    assert summary["generations"] == 12 and summary["env_steps"] > 0
    assert (tmp_path / "run" / "curve.png").exists()


def test_openes_runs_and_resume_continues(tmp_path):
    common = ["--env", "CartPole-v1", "--strategy", "openes", *FAST]
    split = ["--run-dir", str(tmp_path / "split")]
    first = rl_train.main([*common, *split, "--generations", "2"])
    resumed = rl_train.main([*common, *split, "--generations", "4", "--resume"])
    straight = rl_train.main(
        [*common, "--run-dir", str(tmp_path / "straight"), "--generations", "4"]
    )
    assert first["generations"] == 2 and resumed["generations"] == 4
    assert resumed["eval_return"] == straight["eval_return"]
    assert resumed["env_steps"] == straight["env_steps"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--strategy", "cma"], "eggroll or openes"),
        (["--population", "7"], "must be even"),
        (["--optimizer", "lion"], "--optimizer must be one of"),
        (["--hidden", "a,b"], "comma-separated"),
    ],
)
def test_bad_flags(flags, message, capsys):
    with pytest.raises(SystemExit) as err:
        rl_train.main(["--env", "CartPole-v1", *flags])
    assert message in str(err.value) + capsys.readouterr().err
