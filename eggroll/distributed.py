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


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_timeout_seconds: int = 20,
) -> None:
    """Join a multi-process JAX job (one process per host, or several on one machine).

    With no arguments JAX's own cluster detection is used (SLURM, Open MPI, …); otherwise all
    three must be given, e.g. ``initialize("10.0.0.1:1234", 2, 0)``. On CPU the gloo
    collectives are selected. A peer that stops answering for ``heartbeat_timeout_seconds``
    makes every other process exit with an error naming the lost task instead of hanging.
    """
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise ValueError(
            "multi-process start needs all of coordinator, num_processes and process_id "
            "(or none of them, for cluster auto-detection)"
        )
    if num_processes is not None:
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(
                f"process_id must be in [0, {num_processes}) and num_processes ≥ 1, got "
                f"process_id={process_id}, num_processes={num_processes}"
            )
    # CPU arrays need a collectives backend across processes; GPUs use their own (NCCL).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        heartbeat_timeout_seconds=heartbeat_timeout_seconds,
    )


def is_main_process() -> bool:
    """True on the process that writes logs, checkpoints and summaries (process 0)."""
    return jax.process_index() == 0


def local_rows(total: int) -> slice:
    """This process's contiguous share of ``total`` rows laid out along the population axis
    (devices are ordered by process, so process p holds the p-th block)."""
    count = jax.process_count()
    if total % count:
        raise ValueError(f"{total} rows do not split over {count} processes")
    share = total // count
    return slice(jax.process_index() * share, (jax.process_index() + 1) * share)


def global_from_local(local: Any, total: int, mesh: Mesh | None) -> Any:
    """A global array of ``total`` rows split over the population axis, built from this
    process's rows (:func:`local_rows`); on one process the array itself."""
    if mesh is None or jax.process_count() == 1:
        return jax.numpy.asarray(local)
    shape = (total, *np.shape(local)[1:])
    return jax.make_array_from_process_local_data(member_sharding(mesh), np.asarray(local), shape)


def to_host(tree: Any) -> Any:
    """Every leaf readable by this process: arrays split over processes are gathered.

    A collective in multi-process runs: every process must call it (e.g. before process 0
    writes a checkpoint)."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    def fetch(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return leaf
        if leaf.sharding.is_fully_replicated:
            return leaf.addressable_data(0)
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree_util.tree_map(fetch, tree)
