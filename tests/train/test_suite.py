"""eggroll.train.suite: the gymnax suite on two tiny environments (results file, resume, table,
figure), normalisation and wins/ties/losses on hand-made numbers, the stored hyperparameters,
bad settings, and rejax's PPO through the gymnax 1.0 adapter for a few updates."""

import json
import math
import os

import jax
import pytest

from eggroll.train import compare, rl, suite

pytest.importorskip("gymnax")

# Tiny ES settings for the "tiny" policy (one hidden layer of 8): every cell compiles fast.
TINY_ES = {"population": 8, "rank": 1, "sigma": 0.2, "lr": 0.1, "optimizer": "sgd", "episodes": 1}
TINY_PPO = {
    **suite.PPO_DEFAULT,
    "num_envs": 4,
    "num_steps": 8,
    "num_epochs": 1,
    "num_minibatches": 2,
}


def _cell(env, method, seed, final, curve=None):
    curve = curve or [[0.0, 0, 0.0], [1.0, 100, final]]
    return {
        "env": env, "method": method, "seed": seed, "policy": "small", "budget_seconds": 1.0,
        "final_return": final, "final_std": 0.0, "env_steps_per_second": 100.0, "curve": curve,
    }  # fmt: skip


def test_normalisation_and_wins_ties_losses_on_hand_made_numbers(tmp_path):
    cells = [_cell("A", "random", 0, 10.0), _cell("B", "random", 0, -100.0)]
    for seed in range(3):
        cells += [
            _cell("A", "ppo", seed, 110.0, [[0.0, 0, 10.0], [0.5, 50, 110.0], [1.0, 99, 110.0]]),
            _cell("A", "eggroll", seed, 60.0 + seed),  # 60, 61, 62: clearly above OpenES
            _cell("A", "openes", seed, 20.0 + seed),
            _cell("B", "ppo", seed, -50.0),
            _cell("B", "eggroll", seed, [-80.0, -60.0, -70.0][seed]),  # overlapping: a tie
            _cell("B", "openes", seed, [-75.0, -65.0, -72.0][seed]),
        ]
    summary = suite.summarise(cells)
    rows = {(r["env"], r["method"]): r for r in summary["rows"]}
    assert rows["A", "eggroll"]["normalised"] == pytest.approx((61.0 - 10.0) / (110.0 - 10.0))
    assert rows["A", "ppo"]["normalised"] == pytest.approx(1.0)
    assert rows["B", "eggroll"]["normalised"] == pytest.approx((-70.0 + 100.0) / 50.0)
    assert rows["A", "ppo"]["time_to_reference"] == 0.5 and rows["A", "ppo"]["reached"] == 3
    assert (
        rows["A", "eggroll"]["reached"] == 0 and rows["A", "eggroll"]["time_to_reference"] is None
    )
    assert summary["eggroll_vs_openes"] == {"A": "win", "B": "tie"}
    assert summary["wins_ties_losses"] == {"win": 1, "tie": 1, "loss": 0}
    assert suite.compare([1.0, 1.1, 0.9], [5.0, 5.1, 4.9]) == "loss"
    assert suite.compare([9.0], [1.0, 1.1]) == ""  # one seed: no interval, not counted
    assert math.isnan(suite.normalised(3.0, 1.0, 1.0))  # PPO no better than random
    lo, hi = suite.interval95([1.0, 2.0, 3.0])  # mean 2, sd 1, t(2) = 4.303
    assert (lo, hi) == pytest.approx((2 - 4.303 / math.sqrt(3), 2 + 4.303 / math.sqrt(3)))
    table = suite.markdown(summary, "test machine")
    assert "| A | eggroll | 3 |" in table and "1 wins / 1 ties / 0 losses" in table
    assert "test machine" in table
    assert suite.figure(cells, tmp_path / "f.png").stat().st_size > 0


def test_a_tiny_suite_writes_cells_resumes_and_reports(tmp_path, monkeypatch, capsys):
    table = {
        env: {"tiny": {"eggroll": {"hparams": TINY_ES}}} for env in ("CartPole-v1", "Catch-bsuite")
    }
    monkeypatch.setattr(rl, "HPARAMS", tmp_path / "hp.json")
    suite.write_json_atomic(rl.HPARAMS, table)
    results = tmp_path / "r" / "tiny.jsonl"
    argv = ["suite", "run", "--only", "CartPole-v1", "Catch-bsuite", "--methods", "eggroll"]
    argv += ["--policy", "tiny", "--seconds", "0.2", "--seeds", "0"]
    argv += ["--results", str(results)]
    new = compare.main(argv)
    cells = suite.read_cells(results)
    assert len(new) == len(cells) == 2 * 2  # per env: the random policy and EGGROLL
    for cell in cells:
        if cell["method"] != "random":
            assert cell["hparams"]["population"] == 8 and cell["train_seconds"] >= 0.2
            assert cell["curve"][0][0] == 0.0 and cell["env_steps"] > 0
            assert cell["machine"]
    catch = [c for c in cells if c["env"] == "Catch-bsuite" and c["method"] != "random"]
    assert all(c["env_steps"] % 9 == 0 for c in catch)  # Catch episodes: 9 steps, no padding
    for suffix in (".md", ".png", ".summary.json"):
        assert results.with_name("tiny" + suffix).exists(), suffix
    summary = json.loads(results.with_name("tiny.summary.json").read_text())
    assert {r["env"] for r in summary["rows"]} == {"CartPole-v1", "Catch-bsuite"}
    # A killed run leaves a torn last line: it is cut off, and a rerun adds nothing twice.
    with open(results, "a") as f:
        f.write('{"env": "CartPole-v1", "meth')
    capsys.readouterr()
    assert compare.main(argv) == []
    assert suite.read_cells(results) == cells
    assert results.read_text().endswith("}\n")
    assert "other hyperparameters" not in capsys.readouterr().err
    # A stored choice that changed after a cell was trained: the cell is kept and named.
    table["Catch-bsuite"]["tiny"]["eggroll"]["hparams"] = {**TINY_ES, "sigma": 0.1}
    suite.write_json_atomic(rl.HPARAMS, table)
    assert compare.main(argv) == []
    err = capsys.readouterr().err
    assert "Catch-bsuite eggroll seed 0 cell was trained with other hyperparameters" in err
    assert "CartPole-v1" not in err


def test_stored_hyperparameters_are_the_defaults_of_eggroll_rl(tmp_path, monkeypatch):
    monkeypatch.setattr(rl, "HPARAMS", tmp_path / "hp.json")
    assert rl.Config(env="Catch-bsuite").hyperparameters()["sigma"] == rl.GENERIC["sigma"]
    found = {"population": 64, "sigma": 0.3, "lr": 0.2, "optimizer": "sgd", "rank": 2}
    suite.write_json_atomic(
        rl.HPARAMS, {"Catch-bsuite": {"small": {"eggroll": {"hparams": found}}}}
    )
    hp = rl.Config(env="Catch-bsuite").hyperparameters()
    assert {k: hp[k] for k in found} == found
    assert rl.Config(env="Catch-bsuite", sigma=0.05).hyperparameters()["sigma"] == 0.05
    other = rl.Config(env="Catch-bsuite", hidden="32").hyperparameters()  # another policy
    assert other["sigma"] == rl.GENERIC["sigma"]
    assert rl.Config(env="Catch-bsuite", strategy="openes").hyperparameters()["sigma"] == 0.1
    assert suite.es_hparams("Catch-bsuite", "eggroll", "small")["population"] == 64
    # Every method gets the same number of search candidates; ES ones start from the default.
    sizes = {len(suite.candidates("CartPole-v1", m, "small")) for m in suite.METHODS}
    assert sizes == {len(suite.ES_GRID)}
    assert suite.candidates("CartPole-v1", "eggroll", "small")[0]["sigma"] == 0.2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--only", "CartPol"], "unknown gymnax environment 'CartPol'"),
        (["run", "--methods", "cma"], "--methods: unknown ['cma']"),
        (["run", "--policy", "huge"], "--policy must be one of"),
        (["run", "--suite", "atari"], "--suite must be one of"),
        (["run", "--seeds", "1", "1"], "--seeds must be distinct"),
        (["run", "--only", "MNISTBandit-bsuite"], "downloads MNIST"),
        (["search", "--fraction", "2"], "--fraction must be in (0, 1]"),
    ],
)
def test_bad_settings_exit_2_before_anything_runs(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        suite.main([*argv, "--results", str(tmp_path / "r.jsonl")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r.jsonl").exists()


class _Pending:
    """A state leaf whose computation is still running until it is waited for."""

    def __init__(self, log):
        self.log = log

    def block_until_ready(self):
        self.log.append("waited")
        return self


def test_the_clock_waits_for_each_steps_state_not_only_its_step_count(monkeypatch):
    # PPO's step returns (state dispatched asynchronously, a host int): a loop that waited for
    # the count alone would stop the clock before the training ran (it did, once).
    log: list[str] = []
    ticks = iter(range(1000))
    monkeypatch.setattr(suite.time, "perf_counter", lambda: float(next(ticks)))

    def step(state):
        log.append("step")
        return {"pending": _Pending(log)}, 7

    def evaluate(state):
        log.append("eval")
        return 0.0, 0.0

    curve, totals = suite.timed_training(step, {"pending": _Pending(log)}, evaluate, 3.0, 1)
    steps = [i for i, what in enumerate(log) if what == "step"]
    assert steps and all(log[i + 1] == "waited" for i in steps)
    assert totals["updates"] == len(steps) and totals["env_steps"] == 7 * len(steps)


def test_ppo_from_rejax_runs_a_few_updates_on_gymnax_1():
    pytest.importorskip("rejax")
    cell = suite.run_cell("CartPole-v1", "ppo", 0, policy="tiny", seconds=0.2, hp=TINY_PPO)
    assert cell["updates"] >= 1 and cell["env_steps"] % 8192 == 0  # whole chunks of steps
    assert all(math.isfinite(p[2]) for p in cell["curve"])
    assert 1.0 <= cell["final_return"] <= 500.0
    adapter = suite.Gymnax5(rl.Config(env="CartPole-v1").env_spec())
    obs, state = adapter.reset(jax.random.key(0))
    out = adapter.step(jax.random.key(1), state, 0)
    assert len(out) == 5 and out[0].shape == (4,) and out[3].dtype == bool


def test_the_search_stores_the_best_candidate_and_resumes_from_its_cells(tmp_path):
    """With every candidate's cell already in the search log nothing trains: the file is
    derived from the log (best final return, then the faster learner, then the first)."""
    log, hp_file = tmp_path / "search.jsonl", tmp_path / "hp.json"
    finals, curves = [0.5, 1.0, 1.0, 0.8], [0.1, 0.2, 0.6, 0.9]
    for i, hp in enumerate(suite.candidates("Catch-bsuite", "eggroll", "small")):
        cell = _cell("Catch-bsuite", "eggroll", 100, finals[i], [[0.0, 0, curves[i]]])
        suite.append_cell(log, {**cell, "candidate": i, "hparams": hp, "machine": "m"})
    argv = ["search", "--only", "Catch-bsuite", "--methods", "eggroll", "--results", str(log)]
    suite.main([*argv, "--hparams", str(hp_file)])
    entry = json.loads(hp_file.read_text())["Catch-bsuite"]["small"]["eggroll"]
    assert entry["candidate"] == 2 and entry["final_return"] == 1.0
    assert entry["hparams"] == suite.candidates("Catch-bsuite", "eggroll", "small")[2]
    mask = os.umask(0)
    os.umask(mask)
    assert hp_file.stat().st_mode & 0o777 == 0o666 & ~mask  # as open() makes them, not 0600
