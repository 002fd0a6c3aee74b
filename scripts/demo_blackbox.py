"""Library demo: maximise a non-differentiable objective with the public API only.

A small MLP classifies points of two interleaved spirals; the fitness is the number of points
classified correctly (an integer: no gradient exists). EGGROLL and OpenES run side by side.

    python scripts/demo_blackbox.py [--generations 200] [--population 512]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import eggroll as egg


def spirals(n: int, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """``n`` points ``(n, 2)`` on two interleaved spirals and labels ``(n,)`` in {0, 1}."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0.05, 1.0, n)) * 3 * np.pi
    label = rng.integers(0, 2, n)
    sign = np.where(label == 0, 1.0, -1.0)
    x = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], axis=1) / (3 * np.pi)
    return jnp.asarray(x + 0.02 * rng.normal(size=x.shape), jnp.float32), jnp.asarray(label)


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> dict:
    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        key, sub = jax.random.split(key)
        params[f"w{i}"] = jax.random.normal(sub, (n_in, n_out)) / np.sqrt(n_in)
        params[f"b{i}"] = jnp.zeros(n_out)
    return params


def logits(params: dict, x: jax.Array) -> jax.Array:
    """MLP forward with eggroll.nn ops: works on plain params and member views alike."""
    layers = len(params) // 2
    h = x
    for i in range(layers):
        h = egg.nn.dense(h, params[f"w{i}"]) + egg.nn.vector(params[f"b{i}"])
        if i < layers - 1:
            h = jnp.tanh(h)
    return h


def correct_count(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    """Fitness: number of correctly classified points (integer-valued, non-differentiable)."""
    return jnp.sum(jnp.argmax(logits(params, x), axis=-1) == y).astype(jnp.float32)


def run(strategy: egg.Strategy, generations: int, seed: int) -> dict:
    x, y = spirals(512, seed)
    state = strategy.init(jax.random.key(seed), init_mlp(jax.random.key(seed + 1), (2, 64, 64, 2)))
    step = jax.jit(lambda s: strategy.step(s, correct_count, x, y))
    start = time.perf_counter()
    for _ in range(generations):
        state, info = step(state)
    jax.block_until_ready(state.params)
    accuracy = float(correct_count(state.params, x, y)) / len(y)
    return {
        "strategy": strategy.name,
        "accuracy": round(accuracy, 4),
        "best_member_accuracy": round(float(info["fitness_max"]) / len(y), 4),
        "seconds": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=200)
    parser.add_argument("--population", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.generations < 1 or args.population < 2 or args.population % 2:
        parser.error("--generations must be ≥ 1 and --population an even number ≥ 2")
    common = dict(sigma=0.05, optimizer=optax.adam(0.02), shaping=egg.shaping.centered_rank)
    for strategy in (
        egg.EGGROLL(args.population, rank=2, **common),
        egg.OpenES(args.population, **common),
    ):
        print(json.dumps(run(strategy, args.generations, args.seed)))


if __name__ == "__main__":
    main()
