"""ES for RL policies on any gymnax-style environment: EGGROLL or the full-rank OpenES baseline.

    from eggroll.train import rl
    summary = rl.run(rl.Config(env="CartPole-v1", seconds=60))
    summary = rl.run(rl.Config(env=my_env, env_params=my_params, generations=50))

Each member plays ``episodes`` episodes (a ``lax.while_loop`` that ends with the batch's
longest episode, or a fixed-length masked ``lax.scan``) and scores its mean return; the whole
population runs under one ``jit``. The mean policy is evaluated every ``eval_every``
generations over 32 episodes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

import eggroll as egg
from eggroll.envs import rl as rl_env
from eggroll.models import mlp
from eggroll.train import loop
from eggroll.train.config import (
    RunOptions,
    arg,
    check_choice,
    check_finite,
    check_positive,
)

EVAL_EPISODES = 32

# Per-environment defaults that reach the thresholds in docs/BENCHMARKS.md on a 2-core CPU.
# Anything not listed uses GENERIC; settings given explicitly override both.
GENERIC = {
    "population": 256,
    "rank": 4,
    "sigma": 0.1,
    "lr": 0.03,
    "optimizer": "adam",
    "episodes": 1,
    "generations": 200,
    "hidden": "64,64",
    "shaping": "centered_rank",
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {"population": 256, "sigma": 0.2, "lr": 0.1, "optimizer": "sgd",
                    "generations": 100},
    "Acrobot-v1": {"population": 256, "sigma": 0.2, "lr": 0.1, "optimizer": "sgd",
                   "generations": 100},
    "Pendulum-v1": {"population": 512, "rank": 1, "sigma": 0.5, "lr": 0.05, "optimizer": "adam",
                    "episodes": 2, "generations": 400},
}  # fmt: skip
# Settings chosen per environment by the suite's search (`eggroll compare suite search`, see
# docs/RL_SUITE.md), stored as data next to this module: {env: {policy: {strategy: {"hparams":
# {...}, ...}}}} with policy "small" (hidden 64,64) or "paper" (256,256,256). They override
# DEFAULTS for the settings they name when the policy matches.
HPARAMS = Path(__file__).with_name("rl_hparams.json")
POLICIES = {"small": (64, 64), "paper": (256, 256, 256)}
SEARCHED_KEYS = ("population", "rank", "sigma", "lr", "optimizer", "episodes")


def load_hparams(path: Path | None = None) -> dict[str, Any]:
    """The stored search results (``{}`` when there are none)."""
    try:
        return json.loads(Path(path or HPARAMS).read_text())
    except FileNotFoundError:
        return {}


def policy_name(hidden: Any) -> str | None:
    """``small``/``paper`` for the hidden sizes of those policies, else None."""
    try:
        sizes = tuple(int(h) for h in str(hidden).split(","))
    except ValueError:
        return None
    return next((name for name, known in POLICIES.items() if known == sizes), None)


def searched_defaults(
    env: str, strategy: str, hidden: Any, table: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The search's settings for (environment, policy of ``hidden``, strategy), ``{}`` if none."""
    policy = policy_name(hidden)
    table = load_hparams() if table is None else table
    entry = table.get(env, {}).get(policy or "", {}).get(strategy, {}).get("hparams", {})
    return {k: entry[k] for k in SEARCHED_KEYS if k in entry}


OPTIMIZERS = {"sgd": optax.sgd, "adam": optax.adam, "adamw": optax.adamw}
SHAPINGS = {
    "centered_rank": egg.shaping.centered_rank,
    "z_score": egg.shaping.z_score,
    "identity": egg.shaping.identity,
}


@dataclasses.dataclass(frozen=True)
class Config(RunOptions):
    """ES on a gymnax-style environment; settings left ``None`` take the per-environment
    defaults (the suite's search in ``rl_hparams.json``, else ``DEFAULTS``, else ``GENERIC``).
    ``env`` is a registered gymnax id or an environment object (with ``env_params``, default
    ``env.default_params``)."""

    checkpoint_every: int = arg(50, "generations between checkpoints (and at the end)")

    # the environment
    env: Any = arg("CartPole-v1", "gymnax environment id", cli_type=str)
    env_params: Any = dataclasses.field(default=None, metadata={"cli": False})
    strategy: str = arg("eggroll", "eggroll or openes")
    # the strategy (None: the per-environment default)
    population: int | None = arg(None, "population size (even)")
    rank: int | None = arg(None, "EGGROLL rank (leaves smaller than it get full-rank noise)")
    sigma: float | None = arg(None, "noise scale σ")
    lr: float | None = arg(None, "learning rate")
    optimizer: str | None = arg(None, "sgd, adam or adamw")
    shaping: str | None = arg(None, "centered_rank, z_score or identity")
    # the policy and its episodes
    episodes: int | None = arg(None, "episodes per member per generation")
    hidden: str | None = arg(None, "hidden layer sizes, e.g. 64,64")
    activation: str = arg("tanh", "hidden activation: tanh, relu or gelu")
    normalise: bool = arg(True, "running observation normalisation")
    sample_actions: bool = arg(False, "sample discrete actions instead of argmax")
    common_random_numbers: bool = arg(False, "all members see the same episode seeds")
    max_steps: int = arg(0, "cap on episode length (0: the environment's own)")
    rollout: str = arg("while", "episode loop: while (ends with the episodes) or scan (masked)")
    # budget and evaluation
    generations: int | None = arg(None, "budget: generations")
    env_steps: int = arg(0, "budget: environment steps (0: no limit)")
    seconds: float = arg(0.0, "budget: wall-clock seconds of training (0: no limit)")
    target: float | None = arg(None, "stop once the evaluation return reaches this")
    eval_every: int = arg(5, "generations between evaluations of the mean policy")

    def __post_init__(self):
        check_finite(self)
        check_choice("strategy", self.strategy, ("eggroll", "openes"))
        check_choice("activation", self.activation, mlp.ACTIVATIONS)
        check_choice("rollout", self.rollout, rl_env.LOOPS)
        check_positive(self, ("eval_every", "checkpoint_every"))
        for name in ("env_steps", "seconds", "max_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be ≥ 0")
        self.hyperparameters()  # every resolved setting is checked here

    @property
    def env_name(self) -> str:
        return self.env if isinstance(self.env, str) else type(self.env).__name__

    def hyperparameters(self) -> dict[str, Any]:
        """Settings after applying the per-environment defaults (the search's, else
        ``DEFAULTS``, else ``GENERIC``; explicit settings win)."""
        defaults = DEFAULTS.get(self.env, {}) if isinstance(self.env, str) else {}
        values = {**GENERIC, **defaults}
        if isinstance(self.env, str):
            hidden = self.hidden if self.hidden is not None else values["hidden"]
            values.update(searched_defaults(self.env, self.strategy, hidden))
        for key in GENERIC:
            if getattr(self, key) is not None:
                values[key] = getattr(self, key)
        check_choice("optimizer", values["optimizer"], OPTIMIZERS)
        check_choice("shaping", values["shaping"], SHAPINGS)
        try:
            values["hidden"] = [int(h) for h in str(values["hidden"]).split(",")]
        except ValueError:
            raise ValueError("--hidden must be comma-separated integers, e.g. 64,64") from None
        for key in ("population", "rank", "episodes", "generations"):
            if int(values[key]) < 1:
                raise ValueError(f"--{key} must be ≥ 1")
        if values["population"] % 2:
            raise ValueError("--population must be even (antithetic pairs)")
        if not values["sigma"] > 0 or not values["lr"] > 0:
            raise ValueError("--sigma and --lr must be > 0")
        return values

    def env_spec(self) -> rl_env.EnvSpec:
        max_steps = self.max_steps or None
        if isinstance(self.env, str):
            return rl_env.make_env(self.env, max_steps)
        return rl_env.env_spec(self.env, self.env_params, max_steps)


def make_strategy(strategy: str, hp: dict[str, Any]) -> egg.Strategy:
    common = dict(
        sigma=float(hp["sigma"]),
        optimizer=OPTIMIZERS[hp["optimizer"]](float(hp["lr"])),
        shaping=SHAPINGS[hp["shaping"]],
    )
    if strategy == "openes":
        return egg.OpenES(int(hp["population"]), **common)
    # Output layers narrower than the rank are perturbed at their own full rank (EGGROLL's
    # leaf_rank), which keeps them on the fast low-rank path.
    return egg.EGGROLL(int(hp["population"]), rank=int(hp["rank"]), **common)


def make_step(
    es: egg.Strategy,
    spec: rl_env.EnvSpec,
    policy,
    *,
    episodes: int,
    seed: int,
    normalise: bool = True,
    sample: bool = False,
    common_random_numbers: bool = False,
    loop: str = "while",
):
    """The jitted generation ``step(state, stats) -> (state, stats, metrics)``: every member
    plays ``episodes`` episodes, ``metrics["env_steps"]`` counts this generation's steps
    (valid steps only: ``loop`` changes the cost, not the episodes)."""
    fitness = rl_env.make_fitness(spec, policy, normalise=normalise, sample=sample, loop=loop)
    episode_key = jax.random.key(seed)
    population = es.population_size

    def step(state, stats):
        key = jax.random.fold_in(episode_key, state.generation)
        if common_random_numbers:
            keys, axes = jax.random.split(key, episodes), (None, None)
        else:
            keys = jax.random.split(key, population * episodes).reshape(population, episodes)
            axes = (0, None)
        scores, (length, obs_sum, obs_sq) = es.evaluate(
            state, fitness, keys, stats, in_axes=axes, has_aux=True
        )
        steps = jnp.sum(length)
        new_stats = stats.merge(steps, jnp.sum(obs_sum, 0), jnp.sum(obs_sq, 0))
        state, info = es.tell(state, scores)
        return state, (new_stats if normalise else stats), {**info, "env_steps": steps}

    return jax.jit(step)


class Trainer(loop.Trainer):
    """The :class:`eggroll.train.loop.Trainer` of ES on one environment."""

    def __init__(self, config: Config):
        self.config = config
        self.hp = config.hyperparameters()
        self.spec = config.env_spec()
        self.es = make_strategy(config.strategy, self.hp)
        self.policy = functools.partial(mlp.apply, activation=config.activation)
        model = mlp.MLPConfig(tuple(self.hp["hidden"]), config.activation)
        params = mlp.init_params(
            jax.random.key(config.seed), self.spec.obs_size, self.spec.action_size, model
        )
        self.state = self.es.init(jax.random.key(config.seed + 1), params)
        self.stats = rl_env.ObsStats.create(self.spec.obs_size)
        self.options = dict(
            normalise=config.normalise, sample=config.sample_actions, loop=config.rollout
        )
        self.generation = make_step(
            self.es,
            self.spec,
            self.policy,
            episodes=int(self.hp["episodes"]),
            seed=config.seed + 2,
            common_random_numbers=config.common_random_numbers,
            **self.options,
        )
        self.fingerprint = {
            **self.es.config(),
            "env": self.spec.name,
            "hidden": self.hp["hidden"],
            "episodes": int(self.hp["episodes"]),
            "normalise": config.normalise,
        }
        self.reached: dict[str, Any] | None = None

        @jax.jit
        def evaluate_mean(params, stats):
            keys = jax.random.split(jax.random.key(config.seed + 3), EVAL_EPISODES)
            returns = rl_env.episodes(self.spec, self.policy, params, keys, stats, **self.options)
            return jnp.mean(returns.ret), jnp.std(returns.ret)

        self.evaluate_mean = evaluate_mean

    def arrays(self):
        return self.state, self.stats

    def restore(self, arrays, host):
        self.state, self.stats = arrays
        self.reached = host.get("reached_target")

    def host_state(self):
        return {"reached_target": self.reached}

    def step(self, index):
        self.state, self.stats, info = self.generation(self.state, self.stats)
        env_steps = info.pop("env_steps")
        return info, {"env_steps": env_steps}

    def evaluate(self, step, final):
        mean, std = self.evaluate_mean(self.state.params, self.stats)
        return {"eval_return": float(mean), "eval_return_std": float(std)}

    def goal_reached(self, evaluation) -> bool:
        target = self.config.target
        return target is not None and evaluation["eval_return"] >= target

    def describe(self, record, evaluation):
        value = (evaluation or {}).get("eval_return", float("nan"))
        speed = record["env_steps"] / max(record["seconds"], 1e-9)
        return f"eval {value:.1f}, {speed:,.0f} steps/s"

    def summary(self, result: loop.LoopResult) -> dict[str, Any]:
        final = result.evaluations["final"]
        env_steps = int(result.totals.get("env_steps", 0))
        reached = None
        target = self.config.target
        if target is not None:
            hits = [r for r in result.records if r.get("eval_return", -float("inf")) >= target]
            if hits:
                first = hits[0]
                reached = {
                    "generation": first["step"],
                    "env_steps": int(first["env_steps"]),
                    "seconds": round(first["seconds"], 2),
                }
        return {
            "env": self.spec.name,
            "strategy": self.config.strategy,
            "eval_return": round(final["eval_return"], 3),
            "eval_return_std": round(final["eval_return_std"], 3),
            "generations": result.step,
            "env_steps_per_second": round(env_steps / max(result.train_seconds, 1e-9), 1),
            "target": target,
            "reached_target": reached,
            "hyperparameters": self.hp,
        }


def run(config: Config, callbacks: Iterable[Any] = ()) -> dict[str, Any]:
    """Train one policy; returns the summary (also ``summary.json`` in the run folder)."""
    default_dir = f"runs/rl-{config.env_name}-{config.strategy}-%Y%m%d-%H%M%S"
    run_dir = Path(config.run_dir or time.strftime(default_dir))
    loop.check_run_dir(run_dir, config.resume)
    trainer = Trainer(config)
    from eggroll.train.plot import plot_rl

    summary = loop.run_loop(
        trainer,
        run_dir=run_dir,
        budget=loop.Budget(
            steps=int(trainer.hp["generations"]),
            seconds=config.seconds,
            env_steps=config.env_steps,
        ),
        log_every=1,
        eval_every=config.eval_every,
        callbacks=callbacks,
        **config.loop_options(env=trainer.spec.name),
        plot=plot_rl,
    )
    return summary
