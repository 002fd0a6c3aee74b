"""Multi-process runs: the flags every command shares, joining the job, and failing fast when a
peer process dies (the same command runs on every node)."""

from __future__ import annotations

import dataclasses
import sys
import typing
from typing import Any

from eggroll import distributed

EXIT_PEER_LOST = distributed.EXIT_PEER_LOST  # 75, EX_TEMPFAIL: restart every process, --resume


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
    heartbeat_timeout: float = dataclasses.field(
        default=distributed.DEFAULT_HEARTBEAT_TIMEOUT,
        metadata={
            "help": "seconds a peer process may stay silent (frozen, dead, cut off) before "
            "the others exit with code 75"
        },
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
        distributed.initialize(
            flags.coordinator,
            flags.num_processes,
            flags.process_id,
            heartbeat_timeout_seconds=flags.heartbeat_timeout,
        )
    elif flags.auto_cluster:
        distributed.initialize(heartbeat_timeout_seconds=flags.heartbeat_timeout)


def run_guarded(fn: typing.Callable[[], Any]) -> Any:
    """Run a command's work. In a multi-process run, a failed collective (a peer died or hung
    up: :func:`eggroll.distributed.is_peer_failure`) ends this process at once with exit code
    75 and a one-line message naming the error, instead of waiting for JAX's shutdown barrier
    to time out; a frozen or silent peer is caught by the watchdog that
    :func:`eggroll.distributed.initialize` starts (same message and exit code). Any other error
    tells the peers that this process failed (they exit with 75 rather than wait in their next
    collective) and propagates. Restart every process with ``--resume``."""
    import jax

    try:
        return fn()
    except BaseException as err:
        if jax.process_count() == 1:
            raise
        if not (isinstance(err, Exception) and distributed.is_peer_failure(err)):
            distributed.leave(failed=True)  # an error or an interrupt here: the peers stop
            raise
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        try:  # the main thread holds no stream lock here: keep what was printed
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        distributed.exit_peer_lost(first_line)
