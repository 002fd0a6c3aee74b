"""The gymnax RL suite: every environment, EGGROLL vs OpenES vs PPO (rejax) vs evosax Open_ES.

    eggroll compare suite run --suite main --seeds 0 1 2          # resumable, appends cells
    eggroll compare suite run --suite main --only CartPole-v1 Catch-bsuite
    eggroll compare suite search --suite classic                  # writes train/rl_hparams.json
    eggroll compare suite report results/rl-suite/main-small.jsonl
    eggroll compare suite speed --envs Catch-bsuite CartPole-v1   # while vs scan rollouts

A *cell* is one (environment, method, seed) training run at the environment's wall-clock
budget (``BUDGETS``), compile time excluded, evaluated (mean return over 32 episodes) ten
times along the way. Every finished cell is appended as one JSON line to the results file,
and a run skips the cells already there, so a suite can be completed in several parts. The
report (markdown table + one learning-curve panel per environment) is rebuilt from that file:
final return mean ± std over seeds, time to the PPO reference return (PPO's mean final
return), env steps/s, the PPO-normalised score ``(R − random) / (PPO − random)`` and the
wins/ties/losses of EGGROLL against OpenES (a tie: overlapping 95 % t-intervals over seeds).

``search`` tries a few settings per method (the same number of candidates and the same
seconds for every method, PPO included) on one seed and stores the best of each in
``train/rl_hparams.json``; ``run`` and ``eggroll rl`` take their defaults from there.
PPO is rejax's (the ``ppo`` extra); evosax's Open_ES needs the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from eggroll.envs import rl as rl_env
from eggroll.models import mlp
from eggroll.train import rl

SUITES: dict[str, list[str]] = {
    "classic": [
        "CartPole-v1", "Acrobot-v1", "Pendulum-v1", "MountainCar-v0", "MountainCarContinuous-v0",
    ],
    "bsuite": [
        "Catch-bsuite", "DeepSea-bsuite", "MemoryChain-bsuite", "UmbrellaChain-bsuite",
        "DiscountingChain-bsuite", "SimpleBandit-bsuite",
    ],  # MNISTBandit-bsuite downloads MNIST when it is made: left out
    "minatar": [
        "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "SpaceInvaders-MinAtar",
        "Seaquest-MinAtar",
    ],
    "misc": [
        "FourRooms-misc", "MetaMaze-misc", "PointRobot-misc", "BernoulliBandit-misc",
        "GaussianBandit-misc", "Reacher-misc", "Swimmer-misc", "Pong-misc", "FrozenLake-misc",
    ],
}  # fmt: skip
SUITES["main"] = SUITES["classic"] + SUITES["bsuite"] + SUITES["minatar"]
SUITES["all"] = SUITES["main"] + SUITES["misc"]
# Wall-clock seconds of training per cell (compile and evaluation excluded). With 4 methods
# and 3 seeds the main suite is about 2.9 h on a 2-core CPU, compile included.
BUDGETS = {"classic": 40.0, "bsuite": 20.0, "minatar": 75.0, "misc": 30.0}
METHODS = ("eggroll", "openes", "ppo", "evosax")
POLICIES = {**rl.POLICIES, "tiny": (8,)}  # tiny: smoke tests only
EVALUATIONS = 20  # evaluations along a cell's budget (plus one at 0 and the final one)
HPARAMS = rl.HPARAMS
RESULTS = Path("results") / "rl-suite"
ES_KEYS = rl.SEARCHED_KEYS

# PPO settings: rejax's PPO class defaults, and for three environments the tuned settings of
# rejax's own configs (github.com/keraJLi/rejax, configs/gymnax/{cartpole,acrobot,pendulum}.yaml).
PPO_DEFAULT = {
    "num_envs": 64, "num_steps": 64, "num_epochs": 8, "num_minibatches": 16,
    "learning_rate": 3e-4, "max_grad_norm": 10.0, "gamma": 0.99, "gae_lambda": 0.95,
    "clip_eps": 0.2, "ent_coef": 0.01, "vf_coef": 0.5, "activation": "swish",
    "normalize_observations": True,
}  # fmt: skip
_REJAX_SMALL = {
    "num_envs": 5, "num_steps": 100, "num_epochs": 5, "num_minibatches": 5,
    "learning_rate": 7.5e-4, "max_grad_norm": 0.5, "activation": "tanh",
}  # fmt: skip
PPO_DOCUMENTED = {
    "CartPole-v1": {**_REJAX_SMALL, "normalize_observations": False},
    "Acrobot-v1": {**_REJAX_SMALL, "normalize_observations": True},
    "Pendulum-v1": {
        "num_envs": 100, "num_steps": 100, "num_epochs": 10, "num_minibatches": 10,
        "learning_rate": 1e-3, "max_grad_norm": 10.0, "gamma": 0.995, "ent_coef": 0.0,
        "activation": "swish", "normalize_observations": True,
    },
}  # fmt: skip

# The search: the same number of candidates for every method. ES candidates start from the
# current default of the environment (rl.DEFAULTS / rl.GENERIC).
ES_GRID = [
    {},
    {"population": 256, "rank": 1, "sigma": 0.2, "lr": 0.1, "optimizer": "sgd"},
    {"population": 512, "rank": 1, "sigma": 0.5, "lr": 0.05, "optimizer": "adam"},
    {"population": 1024, "rank": 4, "sigma": 0.05, "lr": 0.01, "optimizer": "adam"},
]
PPO_GRID = [
    {},  # the documented setting of the environment, else rejax's defaults
    {"learning_rate": 1e-3},
    {
        "num_envs": 128,
        "num_steps": 128,
        "num_epochs": 4,
        "num_minibatches": 8,
        "learning_rate": 3e-4,
    },
    {"num_envs": 16, "num_steps": 128, "num_epochs": 4, "num_minibatches": 4},
]


def suite_budget(env: str) -> float:
    for name in ("classic", "bsuite", "minatar", "misc"):
        if env in SUITES[name]:
            return BUDGETS[name]
    return BUDGETS["misc"]


def machine() -> str:
    """The CPU model (``lscpu``'s Model name) and the accelerator, for every figure."""
    name = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{name}, {os.cpu_count()} cores, {jax.devices()[0].platform}"


# ---------------------------------------------------------------------------- hyperparameters


def searched(env: str, method: str, policy: str, table: dict | None = None) -> dict[str, Any]:
    """The stored search result of (environment, policy, method), ``{}`` if none."""
    table = rl.load_hparams() if table is None else table
    return dict(table.get(env, {}).get(policy, {}).get(method, {}).get("hparams", {}))


def es_hparams(env: str, method: str, policy: str, table: dict | None = None) -> dict[str, Any]:
    """ES settings of a cell: the search's choice, else ``eggroll rl``'s defaults."""
    table = rl.load_hparams() if table is None else table
    strategy = "openes" if method == "evosax" else method
    base = {**rl.GENERIC, **rl.DEFAULTS.get(env, {})}
    found = searched(env, strategy, policy, table)
    if method == "evosax":
        found.update(searched(env, "evosax", policy, table))
    return {k: found.get(k, base[k]) for k in ES_KEYS}


def ppo_hparams(env: str, policy: str, table: dict | None = None) -> dict[str, Any]:
    found = searched(env, "ppo", policy, table)
    return found or {**PPO_DEFAULT, **PPO_DOCUMENTED.get(env, {})}


def candidates(env: str, method: str, policy: str) -> list[dict[str, Any]]:
    """The search's settings for one method: one list per method, all of the same length."""
    if method == "ppo":
        base = {**PPO_DEFAULT, **PPO_DOCUMENTED.get(env, {})}
        return [{**base, **change} for change in PPO_GRID]
    base = es_hparams(env, method, policy, table={})
    out = []
    for change in ES_GRID:
        hp = {**base, **change}
        if method != "eggroll":
            hp["rank"] = base["rank"]
        out.append(hp)
    return out


def _publish(tmp: str, path: Path) -> None:
    """Give a finished temp file normal permissions (mkstemp makes it 0600) and rename it."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to a temp file in the same folder, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=1, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------- results file


def read_cells(path: Path) -> list[dict[str, Any]]:
    """The cells of a results file; a torn last line (a killed run) is cut off the file."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    cells, good = [], []
    for line in lines:
        if not line.strip():
            continue
        try:
            cells.append(json.loads(line))
            good.append(line)
        except json.JSONDecodeError:
            break  # only the last line can be torn: everything after it is dropped
    clean = "".join(g + "\n" for g in good)
    if clean != text:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(clean)
        _publish(tmp, path)
    return cells


def append_cell(path: Path, cell: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(cell) + "\n")
        f.flush()
        os.fsync(f.fileno())


def cell_key(cell: dict[str, Any]) -> tuple:
    return (cell["env"], cell["method"], cell["seed"], cell["policy"], cell["budget_seconds"])


# ---------------------------------------------------------------------------- training cells


def actor_episodes(spec: rl_env.EnvSpec, act: Callable, keys: jax.Array):
    """Returns and lengths of ``act(obs, key) -> action`` over the episodes ``keys (K,)``:
    a ``while_loop`` to the end of the longest episode, as ``rl_env.rollout``."""

    def one(key):
        reset_key, run_key = jax.random.split(key)
        obs, state = spec.env.reset(reset_key, spec.env_params)

        def body(c):
            t, obs, state, alive, ret, length = c
            act_key, env_key = jax.random.split(jax.random.fold_in(run_key, t))
            action = act(jnp.ravel(obs).astype(jnp.float32), act_key)
            obs, state, reward, terminated, truncated, _ = spec.env.step(
                env_key, state, action, spec.env_params
            )
            ret = ret + alive * jnp.squeeze(reward).astype(jnp.float32)
            alive_now = alive * (1.0 - jnp.logical_or(terminated, truncated).astype(jnp.float32))
            return t + 1, obs, state, alive_now, ret, length + alive

        init = (jnp.zeros((), jnp.int32), obs, state, jnp.ones(()), jnp.zeros(()), jnp.zeros(()))
        c = jax.lax.while_loop(lambda c: (c[0] < spec.max_steps) & (c[3] > 0), body, init)
        return c[4], c[5]

    return jax.vmap(one)(keys)


def _eval_keys(seed: int) -> jax.Array:
    return jax.random.split(jax.random.key(seed + 3), rl.EVAL_EPISODES)


def random_return(spec: rl_env.EnvSpec, seed: int = 0) -> tuple[float, float]:
    """Mean and std of the return of uniformly random actions over 32 episodes."""
    space = spec.env.action_space(spec.env_params)
    rets, _ = jax.jit(lambda k: actor_episodes(spec, lambda o, key: space.sample(key), k))(
        _eval_keys(seed)
    )
    return float(jnp.mean(rets)), float(jnp.std(rets))


def timed_training(step, state, evaluate, seconds: float, evaluations: int = EVALUATIONS):
    """Call ``step(state) -> (state, env_steps)`` until ``seconds`` of training have passed;
    ``evaluate(state) -> (mean, std)`` at 0, every ``seconds / evaluations`` and at the end
    (not counted). Returns the curve ``[[seconds, env_steps, return], ...]`` and the totals."""
    mean, _ = evaluate(state)
    curve = [[0.0, 0, mean]]
    elapsed, env_steps, steps, every = 0.0, 0, 0, seconds / max(evaluations, 1)
    next_eval = every
    while elapsed < seconds:
        start = time.perf_counter()
        state, n = step(state)
        # Dispatch is asynchronous: wait for the new state itself (PPO's step count is a
        # host integer, so waiting for it would leave the training outside the clock).
        jax.block_until_ready(state)
        n = int(n)
        elapsed += time.perf_counter() - start
        env_steps += n
        steps += 1
        if elapsed >= next_eval and elapsed < seconds:
            curve.append([round(elapsed, 3), env_steps, evaluate(state)[0]])
            next_eval += every
    mean, std = evaluate(state)
    curve.append([round(elapsed, 3), env_steps, mean])
    return curve, {
        "final_return": mean,
        "final_std": std,
        "env_steps": env_steps,
        "updates": steps,
        "train_seconds": round(elapsed, 3),
        "env_steps_per_second": round(env_steps / max(elapsed, 1e-9), 1),
    }


def _es_cell(env, method, seed, policy, hp, seconds, evaluations):
    config = rl.Config(
        env=env,
        strategy=method,
        seed=seed,
        hidden=",".join(map(str, POLICIES[policy])),
        progress=False,
        **{k: hp[k] for k in ES_KEYS},
    )
    trainer = rl.Trainer(config)
    start = time.perf_counter()
    generation = trainer.generation.lower(trainer.state, trainer.stats).compile()
    compile_seconds = time.perf_counter() - start

    def step(carry):
        state, stats = carry
        state, stats, info = generation(state, stats)
        return (state, stats), info["env_steps"]

    def evaluate(carry):
        mean, std = trainer.evaluate_mean(carry[0].params, carry[1])
        return float(mean), float(std)

    curve, totals = timed_training(
        step, (trainer.state, trainer.stats), evaluate, seconds, evaluations
    )
    return curve, totals, compile_seconds


def _evosax_cell(env, seed, policy, hp, seconds, evaluations):
    import optax
    from evosax.algorithms import Open_ES

    spec = rl_env.make_env(env)
    model = mlp.MLPConfig(POLICIES[policy], "tanh")
    params = mlp.init_params(jax.random.key(seed), spec.obs_size, spec.action_size, model)
    n, episodes = int(hp["population"]), int(hp["episodes"])
    evo = Open_ES(
        n,
        params,
        optimizer=rl.OPTIMIZERS[hp["optimizer"]](float(hp["lr"])),
        std_schedule=optax.constant_schedule(float(hp["sigma"])),
    )
    evo_params = evo.default_params
    mean_of = getattr(evo, "get_mean", None) or (lambda s: evo._unravel_solution(s.mean))
    policy_fn = mlp.apply

    def generation(carry):
        state, stats, counter = carry
        key = jax.random.fold_in(jax.random.key(seed + 2), counter)
        ask_key, eval_key, tell_key = jax.random.split(key, 3)
        population, state = evo.ask(ask_key, state, evo_params)
        keys = jax.random.split(eval_key, n * episodes).reshape(n, episodes)
        eps = jax.vmap(lambda p, k: rl_env.episodes(spec, policy_fn, p, k, stats))(population, keys)
        state, _ = evo.tell(tell_key, population, -jnp.mean(eps.ret, 1), state, evo_params)
        steps = jnp.sum(eps.length)
        stats = stats.merge(steps, jnp.sum(eps.obs_sum, (0, 1)), jnp.sum(eps.obs_sq, (0, 1)))
        return (state, stats, counter + 1), steps

    @jax.jit
    def evaluate_mean(state, stats):
        eps = rl_env.episodes(spec, policy_fn, mean_of(state), _eval_keys(seed), stats)
        return jnp.mean(eps.ret), jnp.std(eps.ret)

    carry = (
        evo.init(jax.random.key(seed + 1), params, evo_params),
        rl_env.ObsStats.create(spec.obs_size),
        jnp.zeros((), jnp.int32),
    )
    start = time.perf_counter()
    step = jax.jit(generation).lower(carry).compile()
    compile_seconds = time.perf_counter() - start

    def evaluate(c):
        mean, std = evaluate_mean(c[0], c[1])
        return float(mean), float(std)

    curve, totals = timed_training(step, carry, evaluate, seconds, evaluations)
    return curve, totals, compile_seconds


class Gymnax5:
    """A gymnax 1.0 environment with the 5-value ``step`` of gymnax 0.0.x that rejax 0.1
    expects (``done = terminated | truncated``), float observations flattened to a vector."""

    def __init__(self, spec: rl_env.EnvSpec):
        self.spec = spec
        self.env = spec.env

    @property
    def default_params(self):
        return self.spec.env_params

    def observation_space(self, params):
        from gymnax.environments import spaces

        return spaces.Box(-jnp.inf, jnp.inf, (self.spec.obs_size,), jnp.float32)

    def action_space(self, params):
        return self.env.action_space(params)

    def reset(self, key, params=None):
        obs, state = self.env.reset(key, self.spec.env_params if params is None else params)
        return jnp.ravel(obs).astype(jnp.float32), state

    def step(self, key, state, action, params=None):
        params = self.spec.env_params if params is None else params
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action, params)
        done = jnp.logical_or(terminated, truncated)
        return jnp.ravel(obs).astype(jnp.float32), state, reward, done, info


def ppo_algorithm(spec: rl_env.EnvSpec, hp: dict[str, Any], hidden: tuple[int, ...], chunk: int):
    """rejax's PPO on ``spec`` with settings ``hp``; one ``train`` call runs ``chunk`` env steps
    (rounded up to whole iterations) with no evaluation inside."""
    from rejax import PPO

    hp = dict(hp)
    agent = {"hidden_layer_sizes": tuple(hidden), "activation": hp.pop("activation")}
    per_iteration = int(hp["num_envs"]) * int(hp["num_steps"])
    chunk = per_iteration * max(1, math.ceil(chunk / per_iteration))
    algo = PPO.create(
        env=Gymnax5(spec),
        env_params=spec.env_params,
        agent_kwargs=agent,
        total_timesteps=chunk,
        eval_freq=chunk,
        skip_initial_evaluation=True,
        **hp,
    )
    return algo.replace(eval_callback=lambda algo, ts, rng: jnp.zeros(())), chunk


_PPO_PROGRAMS: dict[tuple, tuple] = {}  # the compiled PPO of a setting, shared by seeds


def _ppo_cell(env, seed, policy, hp, seconds, evaluations, chunk=8192):
    spec = rl_env.make_env(env)
    key = (env, policy, json.dumps(hp, sort_keys=True), chunk)
    start = time.perf_counter()
    if key not in _PPO_PROGRAMS:
        algo, steps = ppo_algorithm(spec, hp, POLICIES[policy], chunk)
        ts = algo.init_state(jax.random.PRNGKey(seed))
        train = jax.jit(lambda ts: algo.train(train_state=ts)[0]).lower(ts).compile()

        @jax.jit
        def evaluate_mean(ts, keys):
            rets, _ = actor_episodes(spec, algo.make_act(ts), keys)
            return jnp.mean(rets), jnp.std(rets)

        _PPO_PROGRAMS.clear()  # one setting at a time: the suite runs seeds of a cell together
        _PPO_PROGRAMS[key] = (algo, steps, train, evaluate_mean, jax.tree.structure(ts))
    algo, steps, train, evaluate_mean, treedef = _PPO_PROGRAMS[key]
    # rejax makes a new state class at every init_state: rebuild it as the compiled one's
    ts = jax.tree.unflatten(treedef, jax.tree.leaves(algo.init_state(jax.random.PRNGKey(seed))))
    compile_seconds = time.perf_counter() - start
    keys = _eval_keys(seed)

    def evaluate(ts):
        mean, std = evaluate_mean(ts, keys)
        return float(mean), float(std)

    curve, totals = timed_training(
        lambda ts: (train(ts), steps), ts, evaluate, seconds, evaluations
    )
    return curve, totals, compile_seconds


def use_compilation_cache(folder: Path) -> None:
    """A persistent XLA cache for the suite's programs (PPO's take tens of seconds to
    compile), unless the user has set one."""
    if not jax.config.jax_compilation_cache_dir:
        folder.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(folder))


def run_cell(
    env: str,
    method: str,
    seed: int,
    *,
    policy: str = "small",
    seconds: float | None = None,
    hp: dict[str, Any] | None = None,
    evaluations: int = EVALUATIONS,
) -> dict[str, Any]:
    """Train one (environment, method, seed) cell for ``seconds`` of wall clock; the row."""
    seconds = suite_budget(env) if seconds is None else float(seconds)
    if method == "ppo":
        hp = ppo_hparams(env, policy) if hp is None else hp
        curve, totals, compile_s = _ppo_cell(env, seed, policy, hp, seconds, evaluations)
    elif method == "evosax":
        hp = es_hparams(env, method, policy) if hp is None else hp
        curve, totals, compile_s = _evosax_cell(env, seed, policy, hp, seconds, evaluations)
    else:
        hp = es_hparams(env, method, policy) if hp is None else hp
        curve, totals, compile_s = _es_cell(env, method, seed, policy, hp, seconds, evaluations)
    return {
        "env": env,
        "method": method,
        "seed": seed,
        "policy": policy,
        "budget_seconds": seconds,
        **totals,
        "compile_seconds": round(compile_s, 2),
        "curve": curve,
        "hparams": hp,
        "machine": machine(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


# ---------------------------------------------------------------------------- the report

T95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306}


def interval95(values: list[float]) -> tuple[float, float]:
    """The 95 % t-interval of the mean of ``values`` (a point for one value)."""
    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return mean, mean
    half = T95.get(n, 1.96 if n > 30 else 2.262) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def normalised(value: float, random: float, ppo: float) -> float:
    """``(value − random) / (ppo − random)``; NaN when PPO is no better than random."""
    return (value - random) / (ppo - random) if ppo != random else float("nan")


def compare(a: list[float], b: list[float]) -> str:
    """``win``/``loss`` when the 95 % intervals of the means do not overlap, else ``tie``;
    ``""`` (not compared) while either side has fewer than 2 seeds: no interval yet."""
    if min(len(a), len(b)) < 2:
        return ""
    lo_a, hi_a = interval95(a)
    lo_b, hi_b = interval95(b)
    if lo_a > hi_b:
        return "win"
    if lo_b > hi_a:
        return "loss"
    return "tie"


def summarise(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Per environment and method: returns over seeds, speed, time to the PPO reference,
    the PPO-normalised score; EGGROLL vs OpenES per environment and the count."""
    envs: dict[str, dict[str, list[dict]]] = {}
    randoms: dict[str, float] = {}
    for cell in cells:
        if cell["method"] == "random":
            randoms[cell["env"]] = cell["final_return"]
        else:
            envs.setdefault(cell["env"], {}).setdefault(cell["method"], []).append(cell)
    rows, verdicts = [], {}
    for env, methods in envs.items():
        ppo = methods.get("ppo")
        reference = float(np.mean([c["final_return"] for c in ppo])) if ppo else None
        for method in METHODS:
            group = methods.get(method)
            if not group:
                continue
            finals = [c["final_return"] for c in group]
            times = []
            for c in group:
                hit = next(
                    (p[0] for p in c["curve"] if reference is not None and p[2] >= reference), None
                )
                times.append(hit)
            reached = [t for t in times if t is not None]
            mean = float(np.mean(finals))
            rows.append(
                {
                    "env": env,
                    "method": method,
                    "seeds": len(group),
                    "mean": mean,
                    "std": float(np.std(finals)),
                    "reference": reference,
                    "random": randoms.get(env),
                    "reached": len(reached),
                    "time_to_reference": float(np.median(reached)) if reached else None,
                    "env_steps_per_second": float(
                        np.mean([c["env_steps_per_second"] for c in group])
                    ),
                    "normalised": (
                        normalised(mean, randoms[env], reference)
                        if reference is not None and env in randoms
                        else None
                    ),
                    "budget_seconds": group[0]["budget_seconds"],
                }
            )
        if "eggroll" in methods and "openes" in methods:
            verdicts[env] = compare(
                [c["final_return"] for c in methods["eggroll"]],
                [c["final_return"] for c in methods["openes"]],
            )
    count = {k: sum(v == k for v in verdicts.values()) for k in ("win", "tie", "loss")}
    return {"rows": rows, "eggroll_vs_openes": verdicts, "wins_ties_losses": count}


def _fmt(value, spec="{:.1f}", none="–") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return spec.format(value)


def markdown(summary: dict[str, Any], machine_name: str = "") -> str:
    header = [
        "env", "method", "seeds", "budget s", "final return", "PPO-normalised",
        "time to PPO ref (s, reached)", "env steps/s", "vs OpenES",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * (len(header) - 2)]
    verdicts = summary["eggroll_vs_openes"]
    for r in summary["rows"]:
        reach = f"{_fmt(r['time_to_reference'])} ({r['reached']}/{r['seeds']})"
        verdict = verdicts.get(r["env"], "") if r["method"] == "eggroll" else ""
        lines.append(
            "| "
            + " | ".join(
                [
                    r["env"], r["method"], str(r["seeds"]), f"{r['budget_seconds']:g}",
                    f"{r['mean']:.2f} ± {r['std']:.2f}", _fmt(r["normalised"], "{:.2f}"),
                    reach if r["reference"] is not None else "–",
                    f"{r['env_steps_per_second']:,.0f}", verdict,
                ]
            )
            + " |"
        )  # fmt: skip
    w = summary["wins_ties_losses"]
    lines.append("")
    lines.append(
        f"EGGROLL vs OpenES (95 % intervals over seeds): {w['win']} wins / {w['tie']} ties / "
        f"{w['loss']} losses." + (f" Machine: {machine_name}." if machine_name else "")
    )
    return "\n".join(lines)


def figure(cells: list[dict[str, Any]], out: Path, title: str = "") -> Path:
    """One panel per environment: mean evaluation return over seeds against training seconds
    (step-interpolated onto a common grid), one line per method, the seeds' range shaded, the
    random policy's return dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs: dict[str, dict[str, list[dict]]] = {}
    randoms = {c["env"]: c["final_return"] for c in cells if c["method"] == "random"}
    for c in cells:
        if c["method"] != "random":
            envs.setdefault(c["env"], {}).setdefault(c["method"], []).append(c)
    n = max(len(envs), 1)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), dpi=110, squeeze=False)
    colors = {"eggroll": "C0", "openes": "C1", "ppo": "C2", "evosax": "C3"}
    for ax, (env, methods) in zip(axes.flat, envs.items(), strict=False):
        for method, group in methods.items():
            end = max(c["curve"][-1][0] for c in group)
            grid = np.linspace(0, end, 50)
            ys = []
            for c in group:
                t = np.array([p[0] for p in c["curve"]])
                y = np.array([p[2] for p in c["curve"]])
                idx = np.clip(np.searchsorted(t, grid, side="right") - 1, 0, len(t) - 1)
                ys.append(y[idx])
            ys = np.array(ys)
            color = colors.get(method)
            ax.plot(grid, ys.mean(0), color=color, label=f"{method} ({len(group)})")
            ax.fill_between(grid, ys.min(0), ys.max(0), color=color, alpha=0.15)
        if env in randoms:
            ax.axhline(randoms[env], color="gray", ls=":", lw=1, label="random")
        ax.set_title(env, fontsize=9)
        ax.set_xlabel("training seconds", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(envs) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=out.suffix)
    os.close(fd)
    fig.savefig(tmp)
    plt.close(fig)
    _publish(tmp, out)
    return out


def report(results: Path, out: Path | None = None) -> dict[str, Any]:
    """Rebuild the table (``.md``), the summary (``.summary.json``) and the figure (``.png``)
    from a results file."""
    results = Path(results)
    cells = read_cells(results)
    if not cells:
        raise ValueError(f"{results} has no cells")
    out = Path(out) if out else results.with_suffix("")
    summary = summarise(cells)
    name = cells[-1].get("machine", "")
    table = markdown(summary, name)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = out.with_name(out.name + ".md")
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{md.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(table + "\n")
    _publish(tmp, md)
    write_json_atomic(out.with_name(out.name + ".summary.json"), summary)
    png = figure(cells, out.with_name(out.name + ".png"), f"{results.stem} on {name}")
    print(table)
    print(f"wrote {md}, {png}")
    return summary


# ---------------------------------------------------------------------------- commands


def check_setup(envs: list[str], methods: list[str], policy: str, seeds: list[int]) -> None:
    """Every setting checked before anything compiles; raises ValueError naming the first
    problem."""
    import gymnax

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; choose from {list(METHODS)}")
    if policy not in POLICIES:
        raise ValueError(f"--policy must be one of {list(POLICIES)}, got {policy!r}")
    for env in envs:
        if env not in gymnax.registered_envs:
            raise ValueError(f"unknown gymnax environment {env!r}")
        if env == "MNISTBandit-bsuite":
            raise ValueError("MNISTBandit-bsuite downloads MNIST when it is made: not supported")
    if not envs:
        raise ValueError("no environments selected")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError("--seeds must be distinct integers ≥ 0")
    if "ppo" in methods:
        try:
            import rejax  # noqa: F401
        except ImportError:
            raise ValueError("--methods ppo needs rejax: pip install -e '.[ppo]'") from None
    if "evosax" in methods:
        try:
            import evosax  # noqa: F401
        except ImportError:
            raise ValueError("--methods evosax needs evosax: pip install -e '.[bench]'") from None
    for env in envs:  # resolve every setting now: a bad stored value fails here, not later
        for m in methods:
            if m != "ppo":
                hp = es_hparams(env, m, policy)
                rl.Config(env=env, strategy="openes" if m == "evosax" else m, **hp)


def _selected_envs(args) -> list[str]:
    if args.only:
        return list(args.only)
    if args.suite not in SUITES:
        raise ValueError(f"--suite must be one of {list(SUITES)}, got {args.suite!r}")
    return list(SUITES[args.suite])


def _warn_if_stale(cell: dict[str, Any]) -> None:
    """A stored cell trained with other hyperparameters than the stored choice is kept (cells
    are keyed by environment, method, seed, policy and budget) but named, so that it can be
    deleted from the results file and rerun."""
    if cell["method"] == "random" or "hparams" not in cell:
        return
    if cell["method"] == "ppo":
        now = ppo_hparams(cell["env"], cell["policy"])
    else:
        now = es_hparams(cell["env"], cell["method"], cell["policy"])
    if cell["hparams"] != now:
        print(
            f"note: the stored {cell['env']} {cell['method']} seed {cell['seed']} cell was "
            "trained with other hyperparameters than train/rl_hparams.json holds now; delete "
            "its line from the results file to rerun it",
            file=sys.stderr,
        )


def command_run(args) -> list[dict[str, Any]]:
    envs = _selected_envs(args)
    check_setup(envs, args.methods, args.policy, args.seeds)
    if args.seconds is not None and not args.seconds > 0:
        raise ValueError("--seconds must be > 0")
    results = args.results or RESULTS / f"{args.suite}-{args.policy}.jsonl"
    use_compilation_cache(Path(results).parent / "xla-cache")
    done = {cell_key(c): c for c in read_cells(results)}
    new = []
    deadline = time.monotonic() + args.max_minutes * 60 if args.max_minutes else None
    for env in envs:
        budget = suite_budget(env) if args.seconds is None else args.seconds
        for seed in args.seeds:
            for method in ["random", *args.methods]:
                if method == "random" and seed != args.seeds[0]:
                    continue
                key = (env, method, seed if method != "random" else 0, args.policy, budget)
                if key in done:
                    _warn_if_stale(done[key])
                    continue
                if deadline is not None and time.monotonic() > deadline:
                    print("--max-minutes reached; run the same command again to continue")
                    report(results)
                    return new
                if method == "random":
                    mean, std = random_return(rl_env.make_env(env))
                    cell = {
                        "env": env, "method": "random", "seed": 0, "policy": args.policy,
                        "budget_seconds": budget, "final_return": mean, "final_std": std,
                        "machine": machine(),
                    }  # fmt: skip
                else:
                    cell = run_cell(env, method, seed, policy=args.policy, seconds=budget)
                append_cell(results, cell)
                done[key] = cell
                new.append(cell)
                short = {k: cell.get(k) for k in ("env", "method", "seed", "final_return")}
                short["env_steps_per_second"] = cell.get("env_steps_per_second")
                print(json.dumps(short), flush=True)
    report(results)
    return new


def search_score(cell: dict[str, Any]) -> tuple[float, float]:
    """How the search ranks candidates: final return, then the mean return over the curve's
    evaluations (the faster learner wins a tie at the end)."""
    return cell["final_return"], float(np.mean([p[2] for p in cell["curve"]]))


def command_search(args) -> dict[str, Any]:
    """Each method's candidates on one seed at ``--fraction`` of the budget; the best (see
    :func:`search_score`) goes to the hyperparameter file (merged with what is there, written
    atomically)."""
    envs = _selected_envs(args)
    check_setup(envs, args.methods, args.policy, [args.seed])
    log = args.results or RESULTS / f"search-{args.policy}.jsonl"
    use_compilation_cache(Path(log).parent / "xla-cache")
    done = {(c["env"], c["method"], c["candidate"], c["policy"]): c for c in read_cells(log)}
    table = rl.load_hparams(args.hparams)
    deadline = time.monotonic() + args.max_minutes * 60 if args.max_minutes else None
    for env in envs:
        seconds = suite_budget(env) * args.fraction if args.seconds is None else args.seconds
        for method in args.methods:
            tried = []
            for i, hp in enumerate(candidates(env, method, args.policy)):
                key = (env, method, i, args.policy)
                if key not in done and deadline is not None and time.monotonic() > deadline:
                    print("--max-minutes reached; run the same command again to continue")
                    return table
                if key not in done:
                    cell = run_cell(
                        env, method, args.seed, policy=args.policy, seconds=seconds, hp=hp
                    )
                    cell["candidate"] = i
                    append_cell(log, cell)
                    done[key] = cell
                    print(
                        json.dumps(
                            {k: cell[k] for k in ("env", "method", "candidate", "final_return")}
                        ),
                        flush=True,
                    )
                tried.append(done[key])
            best = max(tried, key=search_score)
            entry = table.setdefault(env, {}).setdefault(args.policy, {})
            entry[method] = {
                "hparams": best["hparams"],
                "final_return": best["final_return"],
                "curve_mean_return": round(search_score(best)[1], 4),
                "candidate": best["candidate"],
                "candidates": len(tried),
                "seconds_each": best["budget_seconds"],
                "seed": args.seed,
                "machine": best["machine"],
            }
            write_json_atomic(args.hparams, table)
    print(f"wrote {args.hparams}")
    return table


def command_speed(args) -> list[dict[str, Any]]:
    """Valid env steps/s of a full EGGROLL generation (population 256, 2×64 policy) with the
    while-loop and the masked-scan rollouts, interleaved in one process."""
    check_setup(args.envs, ["eggroll"], "small", [0])
    rows = []
    trainers = {}
    for env in args.envs:
        for loop in ("scan", "while"):
            config = rl.Config(
                env=env, rollout=loop, progress=False, **{**rl.GENERIC, "generations": 1}
            )
            trainer = rl.Trainer(config)
            generation = trainer.generation.lower(trainer.state, trainer.stats).compile()
            trainers[env, loop] = [generation, trainer.state, trainer.stats, 0, 0.0]
    for _ in range(args.generations):
        for entry in trainers.values():
            generation, state, stats = entry[:3]
            start = time.perf_counter()
            state, stats, info = generation(state, stats)
            n = int(info["env_steps"])
            entry[:5] = [
                generation,
                state,
                stats,
                entry[3] + n,
                entry[4] + time.perf_counter() - start,
            ]
    for (env, loop), entry in trainers.items():
        rows.append(
            {
                "env": env,
                "loop": loop,
                "generations": args.generations,
                "env_steps": entry[3],
                "seconds": round(entry[4], 3),
                "env_steps_per_second": round(entry[3] / entry[4]),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(f"machine: {machine()}")
    return rows


def main(argv: list[str] | None = None, prog: str = "eggroll compare suite") -> Any:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)

    def common(p, methods):
        p.add_argument("--suite", default="main", help=f"one of {list(SUITES)}")
        p.add_argument("--only", nargs="+", help="these environments instead of the suite")
        p.add_argument("--methods", nargs="+", default=list(methods))
        p.add_argument("--policy", default="small", help="small (2×64), paper (3×256) or tiny")
        p.add_argument("--seconds", type=float, help="budget per cell (default: BUDGETS)")
        p.add_argument("--results", type=Path, help="the JSONL file (default under results/)")
        p.add_argument("--max-minutes", type=float, default=0.0, help="stop starting cells after")

    run_p = modes.add_parser("run", help="train the suite's cells (resumable)")
    common(run_p, METHODS)
    run_p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    search_p = modes.add_parser("search", help="choose the hyperparameters per environment")
    common(search_p, METHODS)
    search_p.add_argument("--seed", type=int, default=100)
    search_p.add_argument("--fraction", type=float, default=0.5, help="of the budget, each")
    search_p.add_argument("--hparams", type=Path, default=HPARAMS)
    report_p = modes.add_parser("report", help="table and figure from a results file")
    report_p.add_argument("results", type=Path)
    report_p.add_argument("--out", type=Path)
    speed_p = modes.add_parser("speed", help="env steps/s, while-loop vs masked-scan rollouts")
    speed_p.add_argument("--envs", nargs="+", default=["Catch-bsuite", "CartPole-v1"])
    speed_p.add_argument("--generations", type=int, default=10)
    args = parser.parse_args(argv)
    try:
        if args.mode == "run":
            return command_run(args)
        if args.mode == "search":
            if not 0 < args.fraction <= 1:
                raise ValueError("--fraction must be in (0, 1]")
            return command_search(args)
        if args.mode == "speed":
            return command_speed(args)
        return report(args.results, args.out)
    except ValueError as err:
        parser.error(str(err))
