"""eggroll.train.loop with a Trainer written here around a tiny EGGROLL: the guard stops a run
whose update was skipped (σ schedule reaching 0, infinite learning rate) or whose metrics are
not finite, before anything is written, and the last checkpoint stays loadable; budgets."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import eggroll as egg
from eggroll.train import loop
from tests.train.helpers import records

X = jax.random.normal(jax.random.key(1), (16, 4))
Y = jnp.sin(X @ jnp.arange(1.0, 5.0)[:, None])


def fitness(params, x, y):
    return -jnp.mean((egg.nn.dense(x, params["w"]) - y) ** 2)


class Regression(loop.Trainer):
    """A loop Trainer: EGGROLL fits a linear map; ``poison`` makes a metric NaN at that step."""

    def __init__(self, es: egg.EGGROLL, poison: int = 0):
        self.es, self.poison = es, poison
        self.state = es.init(jax.random.key(0), {"w": jnp.zeros((4, 1))})
        self.fingerprint = es.config()
        self.finite_metrics = ("loss",)

        @jax.jit
        def generation(state):
            scores = es.evaluate(state, fitness, X, Y)
            state, info = es.tell(state, scores)
            return state, {**info, "loss": -fitness(state.params, X, Y)}

        self.generation = generation

    def step(self, index):
        self.state, info = self.generation(self.state)
        if index + 1 == self.poison:
            info["loss"] = jnp.nan
        return info, {"samples": X.shape[0] * self.es.population_size}

    def evaluate(self, step, final):
        return {"loss": float(-fitness(self.state.params, X, Y))}

    def summary(self, result):
        return {"loss": result.evaluations["final"]["loss"]}


def run(trainer, run_dir, steps=10, **options):
    return loop.run_loop(
        trainer,
        run_dir=run_dir,
        budget=loop.Budget(steps=steps),
        checkpoint_every=options.pop("checkpoint_every", 1),
        progress=False,
        **options,
    )


def test_a_sigma_schedule_reaching_zero_stops_the_run_and_keeps_the_checkpoint(tmp_path):
    sigma = optax.linear_schedule(0.1, 0.0, 3)  # σ = 0 from generation 3 (the 4th step) on
    trainer = Regression(egg.EGGROLL(8, sigma, optax.sgd(0.1), rank=1))
    with pytest.raises(loop.TrainingError, match="generation 4") as err:
        run(trainer, tmp_path / "run")
    message = str(err.value)
    assert "σ schedule must stay > 0" in message  # σ ≈ 0 (float32 rounding: ±3e-9)
    assert str(tmp_path / "run" / loop.CHECKPOINT) in message
    # Nothing of the skipped generation was written: rows 1-3, the step-3 checkpoint.
    assert [r["step"] for r in records(tmp_path / "run")] == [1, 2, 3]
    state, meta = egg.checkpoint.load(
        tmp_path / "run" / loop.CHECKPOINT, trainer.arrays(), trainer.fingerprint
    )
    assert meta["step"] == 3 and int(state.generation) == 3
    # The skipped update left the parameters as they were after generation 3.
    np.testing.assert_array_equal(state.params["w"], trainer.state.params["w"])
    assert np.all(np.isfinite(state.params["w"])) and np.any(state.params["w"] != 0)
    assert not (tmp_path / "run" / loop.SUMMARY).exists()


def test_an_infinite_learning_rate_stops_the_run_before_any_checkpoint(tmp_path):
    trainer = Regression(egg.EGGROLL(8, 0.1, optax.sgd(float("inf")), rank=1))
    with pytest.raises(loop.TrainingError, match="generation 1: .*non-finite update"):
        run(trainer, tmp_path / "run")
    assert not (tmp_path / "run" / loop.CHECKPOINT).exists()
    assert records(tmp_path / "run") == []


def test_a_non_finite_metric_stops_the_run_with_the_last_checkpoint_intact(tmp_path):
    trainer = Regression(egg.EGGROLL(8, 0.1, optax.sgd(0.1), rank=1), poison=3)
    with pytest.raises(loop.TrainingError, match="generation 3: loss = nan is not finite"):
        run(trainer, tmp_path / "run", checkpoint_every=2)
    assert [r["step"] for r in records(tmp_path / "run")] == [1, 2]
    fresh = Regression(egg.EGGROLL(8, 0.1, optax.sgd(0.1), rank=1))
    summary = run(fresh, tmp_path / "run", steps=4, checkpoint_every=2, resume=True)
    straight = run(Regression(egg.EGGROLL(8, 0.1, optax.sgd(0.1), rank=1)), tmp_path / "b", 4)
    assert summary["loss"] == straight["loss"] and math.isfinite(summary["loss"])
    assert summary["samples"] == straight["samples"] == 4 * 16 * 8
    rows = records(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 4] and rows[-1]["final"] is True
    assert json.loads((tmp_path / "run" / loop.SUMMARY).read_text())["loss"] == summary["loss"]


def test_budgets_are_checked():
    for bad in (dict(), dict(steps=-1), dict(seconds=math.nan), dict(env_steps=math.inf)):
        with pytest.raises(ValueError, match="budget"):
            loop.Budget(**bad)
    budget = loop.Budget(steps=3, env_steps=100)
    assert budget.reached(2, 0.0, {"env_steps": 99}) is None
    assert budget.reached(2, 0.0, {"env_steps": 100}) == "env_steps"
    assert budget.reached(3, 0.0, {}) == "steps"
