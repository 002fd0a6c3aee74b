"""MLP policy written with eggroll.nn ops (low-rank perturbed under EGGROLL, plain otherwise).

The paper's RL policy is 3 hidden layers of 256; the CPU default here is 2 × 64 (a generation
of 2048 members × 500 CartPole steps stays well under a second on 2 cores), configurable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

import eggroll as egg

Array = jax.Array

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu}


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """``hidden`` layer sizes and the hidden ``activation`` (tanh, relu or gelu)."""

    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"

    def __post_init__(self):
        if not self.hidden or any(not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ValueError(f"hidden sizes must be positive integers, got {self.hidden!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}")


def init_params(key: Array, in_size: int, out_size: int, config: MLPConfig) -> dict[str, Any]:
    """Weights ``w{i} (n_in, n_out)`` scaled 1/√n_in (the last layer ×0.1), zero biases."""
    sizes: Sequence[int] = (in_size, *config.hidden, out_size)
    params = {}
    keys = jax.random.split(key, len(sizes) - 1)
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        scale = (0.1 if i == len(sizes) - 2 else 1.0) / jnp.sqrt(n_in)
        params[f"w{i}"] = scale * jax.random.normal(keys[i], (n_in, n_out))
        params[f"b{i}"] = jnp.zeros(n_out)
    return params


def apply(params: dict[str, Any], x: Array, activation: str = "tanh") -> Array:
    """``x (..., in_size)`` → ``(..., out_size)``; works on plain params and member views."""
    layers = len(params) // 2
    act = ACTIVATIONS[activation]
    for i in range(layers):
        x = egg.nn.dense(x, params[f"w{i}"]) + egg.nn.vector(params[f"b{i}"])
        if i < layers - 1:
            x = act(x)
    return x
