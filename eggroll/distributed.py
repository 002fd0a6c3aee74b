"""The population axis across devices: a 1-D mesh, member-sharded inputs, replicated params.

Members are split evenly over every device of the (global) mesh; parameters and the noise seed
are replicated, every device regenerates its members' noise from the seed, and after
evaluation only the N fitness scalars are gathered, so every device computes the same update.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

POPULATION_AXIS = "population"


def population_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh named ``"population"`` over ``devices`` (default: every global device)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (POPULATION_AXIS,))


def check_divisible(population_size: int, mesh: Mesh) -> None:
    """Raise ``ValueError`` when the members cannot be split evenly over the mesh."""
    devices = mesh.devices.size
    if population_size % devices:
        raise ValueError(
            f"population_size={population_size} does not divide over {devices} devices: use a "
            f"multiple of {devices}, or pass mesh= with fewer devices"
        )


def member_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of arrays whose leading axis is the population."""
    return NamedSharding(mesh, PartitionSpec(POPULATION_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of arrays every device holds whole (parameters, keys, fitness)."""
    return NamedSharding(mesh, PartitionSpec())


def shard_members(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` (leading axis = population) split over the mesh."""
    return jax.device_put(tree, member_sharding(mesh))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` whole on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))
