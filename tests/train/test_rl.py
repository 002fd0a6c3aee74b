"""eggroll.train.rl: learning on CartPole, environment objects (gymnax's and a custom one),
running env_steps totals, resume (interrupted, finished, extended) and bad flags."""

import dataclasses
import math
import shutil

import jax
import jax.numpy as jnp
import pytest

from eggroll.train import cli, loop, rl
from tests.train.helpers import final_rows, records, train_rows

gymnax = pytest.importorskip("gymnax")

# The shapes of every small run below (one compile shared by all of them).
SMALL = dict(population=8, hidden="8", max_steps=50, eval_every=2, progress=False)


def small(run_dir, **changes) -> rl.Config:
    return rl.Config(run_dir=str(run_dir), **{**SMALL, **changes})


def assert_running_env_steps(run_dir, summary):
    """Every row carries the running total of environment steps: strictly increasing over the
    generations, never more than one generation's worth apart, the last one the summary's."""
    rows = train_rows(run_dir, "fitness_mean")
    totals = [r["env_steps"] for r in rows]
    assert [r["step"] for r in rows] == list(range(1, summary["steps"] + 1))
    assert all(b > a for a, b in zip(totals, totals[1:], strict=False)), totals
    hp = summary["hyperparameters"]
    per_generation = hp["population"] * hp["episodes"] * SMALL["max_steps"]
    assert totals[0] <= per_generation
    assert all(b - a <= per_generation for a, b in zip(totals, totals[1:], strict=False))
    assert totals[-1] == summary["env_steps"]
    for row in records(run_dir):  # evaluation rows carry the total of their step too
        assert row["env_steps"] == totals[row["step"] - 1], row


class Reach:
    """A tiny gymnax-style environment written here: move a point on a line to 0.

    Continuous action in [-1, 1]; reward −|x| per step; the episode ends within 0.05 of 0."""

    @dataclasses.dataclass(frozen=True)
    class Params:
        max_steps_in_episode: int = 20
        speed: float = 0.3

    class Box:
        def __init__(self, low, high, shape):
            self.low, self.high, self.shape = low, high, shape

    @property
    def default_params(self):
        return self.Params()

    def reset(self, key, params):
        x = jax.random.uniform(key, (), minval=-1.0, maxval=1.0)
        return x[None], x

    def step(self, key, state, action, params):
        x = state + params.speed * jnp.clip(action[0], -1.0, 1.0)
        done = jnp.abs(x) < 0.05
        return x[None], x, -jnp.abs(x), done, jnp.zeros((), bool), {}

    def observation_space(self, params):
        return self.Box(-jnp.inf, jnp.inf, (1,))

    def action_space(self, params):
        return self.Box(-1.0, 1.0, (1,))


def test_cartpole_learns_well_above_random(tmp_path):
    run_dir = tmp_path / "run"
    summary = rl.run(
        rl.Config(
            env="CartPole-v1",
            run_dir=str(run_dir),
            generations=12,
            population=64,
            hidden="16",
            eval_every=2,
            max_steps=200,
            progress=False,
        )
    )
    first_eval = next(r["eval_return"] for r in records(run_dir) if "eval_return" in r)
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
        "hyperparameters",
    ):
        assert key in summary, key
    assert summary["generations"] == 12 and summary["env_steps"] > 0
    assert summary["env"] == "CartPole-v1" and summary["devices"] == jax.device_count()
    assert (run_dir / "curve.png").exists()
    rows = train_rows(run_dir, "fitness_mean")
    totals = [r["env_steps"] for r in rows]
    assert all(b > a for a, b in zip(totals, totals[1:], strict=False))
    assert totals[-1] == summary["env_steps"]


def test_a_gymnax_environment_object_and_running_env_steps(tmp_path):
    from gymnax.environments.classic_control import CartPole

    env = CartPole()
    seen = []
    summary = rl.run(small(tmp_path / "run", env=env, generations=3), callbacks=[seen.append])
    assert summary["env"] == "CartPole" and summary["generations"] == 3
    assert math.isfinite(summary["eval_return"]) and summary["env_steps"] > 0
    assert [r["step"] for r in seen] == [1, 2, 3]
    assert [r["env_steps"] for r in seen] == [
        r["env_steps"] for r in train_rows(tmp_path / "run", "fitness_mean")
    ]
    assert_running_env_steps(tmp_path / "run", summary)
    assert "CartPole" in summary["config"]["env"]  # the object, by name, in the record
    # The same environment by its registry id, with the same settings (an id would otherwise
    # take its per-environment DEFAULTS), runs the same generations.
    hp = {k: summary["hyperparameters"][k] for k in ("sigma", "lr", "optimizer", "rank")}
    by_id = rl.run(small(tmp_path / "id", env="CartPole-v1", generations=3, **hp))
    assert by_id["env_steps"] == summary["env_steps"]
    assert by_id["eval_return"] == summary["eval_return"]


def test_a_custom_environment_class(tmp_path):
    env = Reach()
    summary = rl.run(
        small(tmp_path / "run", env=env, env_params=Reach.Params(speed=0.2), generations=3)
    )
    assert summary["env"] == "Reach" and summary["generations"] == 3
    assert math.isfinite(summary["eval_return"]) and summary["eval_return"] <= 0
    rows = train_rows(tmp_path / "run", "fitness_mean")
    totals = [r["env_steps"] for r in rows]
    assert all(b > a for a, b in zip(totals, totals[1:], strict=False))
    assert totals[-1] == summary["env_steps"] <= 3 * 8 * 20  # episodes end by 20 steps
    spec = rl.Config(env=env).env_spec()
    assert (spec.obs_size, spec.discrete, spec.action_size, spec.max_steps) == (1, False, 1, 20)


def test_openes_runs_and_resume_continues(tmp_path):
    common = dict(env="CartPole-v1", strategy="openes")
    first = rl.run(small(tmp_path / "split", generations=2, **common))
    resumed = rl.run(small(tmp_path / "split", generations=4, resume=True, **common))
    straight = rl.run(small(tmp_path / "straight", generations=4, **common))
    assert first["generations"] == 2 and resumed["generations"] == 4
    assert resumed["eval_return"] == straight["eval_return"]
    assert resumed["env_steps"] == straight["env_steps"]
    drop = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    train = [drop(r) for r in train_rows(tmp_path / "split", "fitness_mean")]
    assert train == [drop(r) for r in train_rows(tmp_path / "straight", "fitness_mean")]
    assert drop(final_rows(tmp_path / "split")[-1]) == drop(final_rows(tmp_path / "straight")[0])
    assert_running_env_steps(tmp_path / "split", resumed)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("rl") / "run"
    return run_dir, rl.run(small(run_dir, generations=4))


def test_resuming_a_finished_run_changes_nothing(finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished[0], run_dir)
    lines = (run_dir / loop.METRICS).read_text().splitlines()
    again = rl.run(small(run_dir, generations=4, resume=True))
    for key in ("eval_return", "eval_return_std", "env_steps", "generations", "steps"):
        assert again[key] is not None and again[key] == finished[1][key], key
    assert (run_dir / loop.METRICS).read_text().splitlines() == lines
    assert len(final_rows(run_dir)) == 1 and records(run_dir)[-1]["final"] is True


def test_extending_a_finished_run_keeps_one_final_row_at_the_end(finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished[0], run_dir)
    more = rl.run(small(run_dir, generations=6, resume=True))
    straight = rl.run(small(tmp_path / "straight", generations=6))
    assert more["generations"] == 6 and more["eval_return"] == straight["eval_return"]
    rows = records(run_dir)
    assert [r["step"] for r in rows if r.get("final")] == [6] and rows[-1]["final"] is True
    assert_running_env_steps(run_dir, more)
    assert more["env_steps"] == straight["env_steps"]


def test_an_extended_run_logs_the_evaluations_of_an_uninterrupted_run(finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished[0], run_dir)
    rl.run(small(run_dir, generations=6, resume=True))
    rl.run(small(tmp_path / "straight", generations=6))

    def evaluations(path):
        rows = [r for r in records(path) if "eval_return" in r]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert evaluations(run_dir) == evaluations(tmp_path / "straight")


def test_an_env_steps_budget_stops_the_run(tmp_path):
    summary = rl.run(small(tmp_path / "run", generations=100, env_steps=1))
    assert summary["stopped_by"] == "env_steps" and summary["generations"] == 1
    assert summary["env_steps"] == records(tmp_path / "run")[-1]["env_steps"] > 0


def test_target_stops_the_run_as_a_goal(tmp_path):
    summary = rl.run(small(tmp_path / "run", generations=6, target=-1e9))
    assert summary["stopped_by"] == "goal" and summary["generations"] == 2
    assert summary["reached_target"]["generation"] == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--strategy", "cma"], "--strategy must be one of ['eggroll', 'openes']"),
        (["--population", "7"], "--population must be even"),
        (["--optimizer", "lion"], "--optimizer must be one of"),
        (["--hidden", "a,b"], "comma-separated"),
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--sigma", "nan"], "--sigma must be a finite number"),
        (["--seconds", "-1"], "--seconds must be ≥ 0"),
    ],
)
def test_bad_flags_exit_2_with_a_message(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.run_application("rl", ["--env", "CartPole-v1", *flags])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_unknown_environment_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.run_application("rl", ["--env", "CartPol", "--run-dir", str(tmp_path / "r")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "unknown gymnax environment 'CartPol'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r" / loop.CHECKPOINT).exists()


@pytest.mark.parametrize(("env_id", "max_steps"), [("Catch-bsuite", 100), ("CartPole-v1", 60)])
def test_the_while_loop_rollout_gives_the_masked_scans_episodes(env_id, max_steps):
    """The rollout that stops at the end of the episodes plays the same episodes as the
    fixed-length masked scan: same returns, lengths and observation sums, bit for bit."""
    from eggroll.envs import rl as rl_env
    from eggroll.models import mlp

    spec = rl_env.make_env(env_id, max_steps)
    params = mlp.init_params(
        jax.random.key(0), spec.obs_size, spec.action_size, mlp.MLPConfig((8,))
    )
    stats = rl_env.ObsStats.create(spec.obs_size)
    keys = jax.random.split(jax.random.key(1), 6)

    @jax.jit
    def both(params, keys):
        return [rl_env.episodes(spec, mlp.apply, params, keys, stats, loop=loop, sample=True)
                for loop in rl_env.LOOPS]  # fmt: skip

    by_while, by_scan = both(params, keys)
    for a, b in zip(jax.tree.leaves(by_while), jax.tree.leaves(by_scan), strict=True):
        assert jnp.array_equal(a, b)
    assert int(by_while.length.max()) < spec.max_steps  # the episodes did end early
    with pytest.raises(ValueError, match="loop must be one of"):
        rl_env.rollout(spec, mlp.apply, params, keys[0], stats, loop="for")
