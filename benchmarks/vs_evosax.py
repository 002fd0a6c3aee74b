"""CartPole-v1 with the same policy, population, episodes, σ and optimiser through evosax's
Open_ES and through our EGGROLL and OpenES (needs the ``bench`` extra: evosax, gymnax).

    python scripts/bench.py vs-evosax
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import eggroll as egg
from eggroll.benchmarks.common import machine_info, markdown_table

NAME = "vs-evosax"
HELP = "CartPole-v1: evosax Open_ES vs ours"
NOISE_VARIANT = False
SOLVED = 475  # CartPole-v1's threshold on the mean policy's return


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--population", type=int, default=256)
    p.add_argument("--generations", type=int, default=200)


def run(args: argparse.Namespace) -> dict:
    """CartPole-v1 with the same policy, population, episodes, σ and optimiser through evosax's
    Open_ES and through our EGGROLL and OpenES: time per generation and time to 475."""
    from evosax.algorithms import Open_ES

    from eggroll.envs import rl
    from eggroll.models import mlp

    task = rl.make_env("CartPole-v1")
    policy = functools.partial(mlp.apply, activation="tanh")
    params = mlp.init_params(
        jax.random.key(0), task.obs_size, task.action_size, mlp.MLPConfig((64, 64))
    )
    stats = rl.ObsStats.create(task.obs_size)  # no normalisation: identical for all three
    opts = dict(normalise=False)
    n, sigma, lr = args.population, 0.2, 0.1

    def returns_of(member_params, key):
        keys = jax.random.split(key, 1)
        return jnp.mean(rl.episodes(task, policy, member_params, keys, stats, **opts).ret)

    @jax.jit
    def eval_mean(p):
        keys = jax.random.split(jax.random.key(99), 32)
        return jnp.mean(rl.episodes(task, policy, p, keys, stats, **opts).ret)

    rows = []
    ours = {
        "eggroll": egg.EGGROLL(n, sigma=sigma, rank=1, optimizer=optax.sgd(lr)),
        "eggroll noise=table": egg.EGGROLL(
            n, sigma=sigma, rank=1, optimizer=optax.sgd(lr), noise="table"
        ),
        "eggroll OpenES": egg.OpenES(n, sigma=sigma, optimizer=optax.sgd(lr)),
    }
    fitness = rl.make_fitness(task, policy, **opts)
    for name, es in ours.items():
        state = es.init(jax.random.key(1), params)

        @jax.jit
        def gen(state, es=es):
            key = jax.random.fold_in(jax.random.key(5), state.generation)
            keys = jax.vmap(lambda k: jax.random.split(k, 1))(jax.random.split(key, n))
            scores, _ = es.evaluate(state, fitness, keys, stats, in_axes=(0, None), has_aux=True)
            return es.tell(state, scores)[0]

        rows.append(
            _solve(name, lambda s, gen=gen: gen(s), state, lambda s: s.params, eval_mean, args)
        )

    evo = Open_ES(n, params, optimizer=optax.sgd(lr), std_schedule=optax.constant_schedule(sigma))
    evo_params = evo.default_params
    evo_state = evo.init(jax.random.key(1), params, evo_params)

    @jax.jit
    def evo_gen(carry):
        state, counter = carry
        key = jax.random.fold_in(jax.random.key(5), counter)
        ask_key, eval_key, tell_key = jax.random.split(key, 3)
        population, state = evo.ask(ask_key, state, evo_params)
        scores = jax.vmap(returns_of)(population, jax.random.split(eval_key, n))
        state, _ = evo.tell(tell_key, population, -scores, state, evo_params)  # minimises
        return state, counter + 1

    rows.append(
        _solve(
            "evosax Open_ES",
            evo_gen,
            (evo_state, 0),
            lambda c: (
                evo.get_mean(c[0]) if hasattr(evo, "get_mean") else evo._unravel_solution(c[0].mean)
            ),
            eval_mean,
            args,
        )
    )
    for row in rows:
        print(json.dumps(row), flush=True)
    return {
        "benchmark": NAME,
        "machine": machine_info(),
        "population": n,
        "sigma": sigma,
        "lr": lr,
        "policy": "MLP 4-64-64-2 tanh",
        "rows": rows,
    }


def _solve(name, step, state, mean_of, eval_mean, args) -> dict:
    """Run generations until the mean policy scores ≥ 475 (checked every 5) or the budget."""
    state = step(state)  # compile
    jax.block_until_ready(jax.tree_util.tree_leaves(state))
    per_gen, elapsed, reached, generation = [], 0.0, None, 1
    while generation < args.generations:
        start = time.perf_counter()
        state = step(state)
        jax.block_until_ready(jax.tree_util.tree_leaves(state))
        per_gen.append(time.perf_counter() - start)
        elapsed += per_gen[-1]
        generation += 1
        if generation % 5 == 0 and reached is None:
            score = float(eval_mean(mean_of(state)))
            if score >= SOLVED:
                reached = {"generation": generation, "seconds": round(elapsed, 2)}
                break
    return {
        "strategy": name,
        "ms_per_generation": round(1e3 * statistics.median(per_gen), 2),
        "solved": reached,
        "generations_run": generation,
    }


def render(result: dict) -> str:
    return markdown_table(
        result["rows"], ["strategy", "ms_per_generation", "solved", "generations_run"]
    )
