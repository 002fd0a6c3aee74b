"""Multi-process runs: the flags every command shares, joining the job, and failing fast when a
peer process dies (the same command runs on every node)."""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from typing import Any

from eggroll import distributed

EXIT_PEER_LOST = 75  # EX_TEMPFAIL: restart every process with --resume


@dataclasses.dataclass(frozen=True)
class ClusterFlags:
    """Multi-process flags shared by every command (the same command runs on every node)."""

    coordinator: str = dataclasses.field(
        default="", metadata={"help": "host:port of process 0 for a multi-process run"}
    )
    num_processes: int = dataclasses.field(
        default=0, metadata={"help": "processes in a multi-process run (0: single process)"}
    )
    process_id: int = dataclasses.field(
        default=-1, metadata={"help": "this process's index in a multi-process run"}
    )
    auto_cluster: bool = dataclasses.field(
        default=False, metadata={"help": "let JAX detect the cluster (SLURM, Open MPI, ...)"}
    )


def start_cluster(flags: ClusterFlags) -> None:
    """Join the multi-process job described by the flags (before any JAX computation)."""
    explicit = bool(flags.coordinator) or flags.num_processes > 0 or flags.process_id >= 0
    if explicit:
        if not (flags.coordinator and flags.num_processes > 0 and flags.process_id >= 0):
            raise SystemExit(
                "a multi-process run needs --coordinator HOST:PORT, --num-processes N and "
                "--process-id I together (or --auto-cluster under SLURM/MPI)"
            )
        distributed.initialize(flags.coordinator, flags.num_processes, flags.process_id)
    elif flags.auto_cluster:
        distributed.initialize()


def run_guarded(fn: typing.Callable[[], Any]) -> Any:
    """Run a command's work; in a multi-process run, a failed collective (a peer died or hung
    up) ends this process at once with exit code 75 and a message naming the error, instead
    of waiting for JAX's shutdown barrier to time out. Restart with ``--resume``."""
    import jax

    try:
        return fn()
    except jax.errors.JaxRuntimeError as err:
        if jax.process_count() == 1:
            raise
        first_line = str(err).strip().splitlines()[0]
        sys.stderr.write(
            f"eggroll: process {jax.process_index()} of {jax.process_count()} lost contact with "
            f"a peer process: {first_line}\nexiting; restart every process with --resume to "
            "continue from the last checkpoint\n"
        )
        sys.stderr.flush()
        os._exit(EXIT_PEER_LOST)
