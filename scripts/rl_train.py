"""ES for RL policies on gymnax environments, EGGROLL or the full-rank OpenES baseline.

    python scripts/rl_train.py --env CartPole-v1                # per-env defaults (DEFAULTS)
    python scripts/rl_train.py --env Pendulum-v1 --strategy openes --seconds 300
    python scripts/rl_train.py --env CartPole-v1 --resume --run-dir runs/rl-...

Each member plays ``episodes`` episodes (fixed-length masked ``lax.scan``) and scores its mean
return; the whole population runs under one ``jit``. The mean policy is evaluated every
``eval_every`` generations over 32 episodes. At exit one line of JSON (also ``summary.json``).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from common import (
    ClusterFlags,
    JsonlLog,
    arg,
    check_run_dir,
    config_dict,
    parse_config,
    run_guarded,
    start_cluster,
    truncate_jsonl,
    try_plot,
    write_summary,
)
from tqdm import tqdm

import eggroll as egg
from eggroll import distributed
from eggroll.envs import rl
from eggroll.models import mlp

CHECKPOINT = "checkpoint.msgpack"
EVAL_EPISODES = 32

# Per-environment defaults that reach the thresholds in docs/BENCHMARKS.md on a 2-core CPU.
# Anything not listed uses GENERIC; flags on the command line override both.
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
    "CartPole-v1": {
        "population": 256,
        "sigma": 0.2,
        "lr": 0.1,
        "optimizer": "sgd",
        "generations": 100,
    },
    "Acrobot-v1": {
        "population": 256,
        "sigma": 0.2,
        "lr": 0.1,
        "optimizer": "sgd",
        "generations": 100,
    },
    "Pendulum-v1": {
        "population": 512,
        "rank": 1,
        "sigma": 0.5,
        "lr": 0.05,
        "optimizer": "adam",
        "episodes": 2,
        "generations": 400,
    },
}
OPTIMIZERS = {"sgd": optax.sgd, "adam": optax.adam, "adamw": optax.adamw}
SHAPINGS = {
    "centered_rank": egg.shaping.centered_rank,
    "z_score": egg.shaping.z_score,
    "identity": egg.shaping.identity,
}


@dataclasses.dataclass(frozen=True)
class RLConfig(ClusterFlags):
    env: str = arg("CartPole-v1", "gymnax environment id")
    strategy: str = arg("eggroll", "eggroll or openes")
    run_dir: str = arg("", "run folder (default: runs/rl-<env>-<strategy>-<date>-<time>)")
    resume: bool = arg(False, "continue the run in --run-dir from its checkpoint")
    population: int | None = arg(None, "population size (even)")
    rank: int | None = arg(None, "EGGROLL rank (leaves smaller than it get full-rank noise)")
    sigma: float | None = arg(None, "noise scale σ")
    lr: float | None = arg(None, "learning rate")
    optimizer: str | None = arg(None, "sgd, adam or adamw")
    shaping: str | None = arg(None, "centered_rank, z_score or identity")
    episodes: int | None = arg(None, "episodes per member per generation")
    hidden: str | None = arg(None, "hidden layer sizes, e.g. 64,64")
    activation: str = arg("tanh", "hidden activation: tanh, relu or gelu")
    normalise: bool = arg(True, "running observation normalisation")
    sample_actions: bool = arg(False, "sample discrete actions instead of argmax")
    common_random_numbers: bool = arg(False, "all members see the same episode seeds")
    max_steps: int = arg(0, "cap on episode length (0: the environment's own)")
    generations: int | None = arg(None, "budget: generations")
    env_steps: int = arg(0, "budget: environment steps (0: no limit)")
    seconds: float = arg(0.0, "budget: wall-clock seconds of training (0: no limit)")
    target: float | None = arg(None, "stop once the evaluation return reaches this")
    eval_every: int = arg(5, "generations between evaluations of the mean policy")
    checkpoint_every: int = arg(50, "generations between checkpoints (and at the end)")
    seed: int = arg(0, "seed")
    progress: bool = arg(True, "show a progress bar")

    def __post_init__(self):
        if self.strategy not in ("eggroll", "openes"):
            raise ValueError("--strategy must be eggroll or openes")
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1")
        if self.env_steps < 0 or self.seconds < 0 or self.max_steps < 0:
            raise ValueError("--env-steps, --seconds and --max-steps must be ≥ 0")

    def resolved(self) -> dict[str, Any]:
        """Hyperparameters after applying the per-environment defaults."""
        values = {**GENERIC, **DEFAULTS.get(self.env, {})}
        for key in GENERIC:
            if getattr(self, key) is not None:
                values[key] = getattr(self, key)
        if values["optimizer"] not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {sorted(OPTIMIZERS)}")
        if values["shaping"] not in SHAPINGS:
            raise ValueError(f"--shaping must be one of {sorted(SHAPINGS)}")
        try:
            values["hidden"] = tuple(int(h) for h in str(values["hidden"]).split(","))
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


def make_strategy(cfg: RLConfig, hp: dict[str, Any]) -> egg.Strategy:
    common = dict(
        sigma=float(hp["sigma"]),
        optimizer=OPTIMIZERS[hp["optimizer"]](float(hp["lr"])),
        shaping=SHAPINGS[hp["shaping"]],
    )
    if cfg.strategy == "openes":
        return egg.OpenES(int(hp["population"]), **common)
    rank = int(hp["rank"])

    def rule(path: str, leaf: Any) -> str:  # output layers narrower than the rank: full noise
        return "lowrank" if leaf.ndim >= 2 and min(leaf.shape[-2:]) >= rank else "full"

    return egg.EGGROLL(int(hp["population"]), rank=rank, leaf_rule=rule, **common)


def run(cfg: RLConfig) -> dict[str, Any]:
    hp = cfg.resolved()
    task = rl.make_env(cfg.env, cfg.max_steps or None)
    es = make_strategy(cfg, hp)
    run_dir = Path(cfg.run_dir or time.strftime(f"runs/rl-{cfg.env}-{cfg.strategy}-%Y%m%d-%H%M%S"))
    checkpoint_path = check_run_dir(run_dir, cfg.resume, CHECKPOINT)
    main = distributed.is_main_process()  # only process 0 writes and prints
    progress = cfg.progress and main
    say = (tqdm.write if progress else print) if main else (lambda *_: None)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)

    config = mlp.MLPConfig(hp["hidden"], cfg.activation)
    policy = functools.partial(mlp.apply, activation=cfg.activation)
    params = mlp.init_params(jax.random.key(cfg.seed), task.obs_size, task.action_size, config)
    state = es.init(jax.random.key(cfg.seed + 1), params)
    stats = rl.ObsStats.create(task.obs_size)
    options = dict(normalise=cfg.normalise, sample=cfg.sample_actions)
    fitness = rl.make_fitness(task, policy, **options)
    population, episodes = int(hp["population"]), int(hp["episodes"])
    episode_key = jax.random.key(cfg.seed + 2)

    @jax.jit
    def generation(state, stats):
        key = jax.random.fold_in(episode_key, state.generation)
        if cfg.common_random_numbers:
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
        return state, (new_stats if cfg.normalise else stats), {**info, "env_steps": steps}

    @jax.jit
    def evaluate_mean(params, stats):
        keys = jax.random.split(jax.random.key(cfg.seed + 3), EVAL_EPISODES)
        returns = rl.episodes(task, policy, params, keys, stats, **options).ret
        return jnp.mean(returns), jnp.std(returns)

    fingerprint = {
        **es.config(),
        "env": cfg.env,
        "hidden": list(hp["hidden"]),
        "episodes": episodes,
        "normalise": cfg.normalise,
    }
    log = JsonlLog(run_dir / "metrics.jsonl", enabled=main)
    env_steps, train_seconds, gen = 0, 0.0, 0
    if cfg.resume:
        (state, stats), meta = egg.checkpoint.load(checkpoint_path, (state, stats), fingerprint)
        env_steps, train_seconds, gen = meta["env_steps"], meta["train_seconds"], meta["gen"]
        if main:
            truncate_jsonl(log.path, lambda r: r.get("generation", 0) <= gen)
        say(f"resumed {run_dir} at generation {gen}")
    elif main:
        log.path.unlink(missing_ok=True)

    def save():
        host_state = distributed.to_host((state, stats))  # a collective: every process calls
        if not main:
            return
        egg.checkpoint.save(
            checkpoint_path,
            host_state,
            fingerprint,
            {
                "gen": gen,
                "env_steps": env_steps,
                "train_seconds": train_seconds,
                "config": config_dict(cfg),
                "hyperparameters": {**hp, "hidden": list(hp["hidden"])},
            },
        )

    compile_start = time.perf_counter()  # compile outside the timed training loop
    generation = generation.lower(state, stats).compile()
    compile_seconds = time.perf_counter() - compile_start
    budget = int(hp["generations"])
    bar = tqdm(total=budget, initial=gen, disable=not progress, unit="gen", dynamic_ncols=True)
    eval_return, eval_std, reached_at = float("nan"), float("nan"), None
    started = time.perf_counter()
    while gen < budget:
        if cfg.env_steps and env_steps >= cfg.env_steps:
            break
        if cfg.seconds and train_seconds >= cfg.seconds:
            break
        t0 = time.perf_counter()
        state, stats, info = generation(state, stats)
        info = {k: float(v) for k, v in info.items()}  # one host sync per generation
        train_seconds += time.perf_counter() - t0
        gen += 1
        env_steps += int(info["env_steps"])
        record = {"generation": gen, "env_steps": env_steps, "seconds": train_seconds, **info}
        if gen % cfg.eval_every == 0 or gen == budget:
            mean, std = evaluate_mean(state.params, stats)
            eval_return, eval_std = float(mean), float(std)
            record.update(eval_return=eval_return, eval_return_std=eval_std)
            if cfg.target is not None and eval_return >= cfg.target and reached_at is None:
                reached_at = {
                    "generation": gen,
                    "env_steps": env_steps,
                    "seconds": round(train_seconds, 2),
                }
        log.write(record)
        if gen % cfg.checkpoint_every == 0:
            save()
        bar.set_postfix_str(
            f"eval {eval_return:.1f}, {env_steps / max(train_seconds, 1e-9):,.0f} steps/s"
        )
        bar.update(1)
        if reached_at is not None:
            break
    bar.close()
    if gen % cfg.eval_every != 0:  # make the final number about the final parameters
        mean, std = evaluate_mean(state.params, stats)
        eval_return, eval_std = float(mean), float(std)
        log.write(
            {
                "generation": gen,
                "env_steps": env_steps,
                "seconds": train_seconds,
                "eval_return": eval_return,
                "eval_return_std": eval_std,
            }
        )
    save()
    summary = {
        "env": cfg.env,
        "strategy": cfg.strategy,
        "eval_return": round(eval_return, 3),
        "eval_return_std": round(eval_std, 3),
        "env_steps": env_steps,
        "generations": gen,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "train_seconds": round(train_seconds, 2),
        "env_steps_per_second": round(env_steps / max(train_seconds, 1e-9), 1),
        "compile_seconds": round(compile_seconds, 2),
        "target": cfg.target,
        "reached_target": reached_at,
        "hyperparameters": {**hp, "hidden": list(hp["hidden"])},
        "run_dir": str(run_dir),
    }
    if main:
        from plot import plot_rl

        summary["curve"] = try_plot(plot_rl, run_dir, say)
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(RLConfig, argv, __doc__.splitlines()[0])
    try:
        cfg.resolved()
    except ValueError as err:
        raise SystemExit(f"rl_train.py: {err}") from None
    start_cluster(cfg)
    summary = run_guarded(lambda: run(cfg))
    if distributed.is_main_process():
        print(write_summary(Path(summary["run_dir"]), summary), flush=True)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
