"""The population axis across devices: a 1-D mesh, member-sharded inputs, replicated params.

Members are split evenly over every device of the (global) mesh; parameters and the noise seed
are replicated, every device regenerates its members' noise from the seed, and after
evaluation only the N fitness scalars are gathered, so every device computes the same update.

Multi-process jobs: :func:`initialize` joins one and starts a watchdog, so a frozen, dead or
cut-off peer process ends the others with exit code :data:`EXIT_PEER_LOST` (75) and a one-line
message (:func:`exit_peer_lost`) instead of a hang or JAX's abort.
"""

from __future__ import annotations

import atexit
import math
import os
import threading
import time
import typing
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


EXIT_PEER_LOST = 75  # EX_TEMPFAIL: restart every process (the commands: with --resume)
DEFAULT_HEARTBEAT_TIMEOUT = 20.0  # seconds of silence before a peer process counts as lost
_HEARTBEAT_PREFIX = "eggroll/heartbeat/"
_EXITED, _FAILED = "exited", "failed"
# Words in the error of a collective whose peer is gone (gloo and NCCL transports, gRPC).
_PEER_FAILURE_MARKS = ("gloo", "nccl", "connection reset", "connection closed", "unavailable:")


def _where() -> tuple[int, int]:
    """``(process index, process count)`` of this process, without starting a backend."""
    from jax._src import distributed as jax_distributed

    state = jax_distributed.global_state
    if state.client is not None:
        return state.process_id, state.num_processes
    return jax.process_index(), jax.process_count()


def exit_peer_lost(reason: str) -> typing.NoReturn:
    """Report a lost peer process on one line and end this process at once with exit code
    :data:`EXIT_PEER_LOST` (75), skipping JAX's shutdown barrier, which would wait for the
    lost peer. Safe to call from any thread."""
    index, count = _where()
    message = (
        f"eggroll: process {index} of {count} lost contact with a peer process: {reason}\n"
        "exiting; restart every process with --resume to continue from the last checkpoint\n"
    )
    try:  # a raw write: no lock on sys.stderr that a blocked thread might hold
        os.write(2, message.encode("utf-8", "replace"))
    except OSError:
        pass
    os._exit(EXIT_PEER_LOST)


def is_peer_failure(err: BaseException) -> bool:
    """True when ``err`` is how a collective fails because a peer process died or hung up:
    a ``JaxRuntimeError``, or an error naming the collectives' transport (gloo raises plain
    ``ValueError`` s such as ``Gloo AllGather failed: ... Connection reset by peer``)."""
    if isinstance(err, jax.errors.JaxRuntimeError):
        return True
    text = str(err).lower()
    return isinstance(err, ValueError | RuntimeError) and any(
        mark in text for mark in _PEER_FAILURE_MARKS
    )


class _PeerWatch:
    """A sign of life every ``interval`` seconds through the coordinator's key-value store, and
    a check that every peer gave one within ``timeout`` seconds.

    Two daemon threads: ``beat`` posts this process's counter and reads every peer's (one
    ``key_value_set`` and one ``key_value_dir_get`` per round); ``check`` ends the process
    with :func:`exit_peer_lost` when a peer's counter has not moved for ``timeout`` seconds
    (it is frozen, killed or cut off), when a peer reported that it failed, or when no round
    completed for ``timeout`` seconds (the coordinator, process 0, does not answer). A round
    that fails (the coordinator is gone) ends the process at once. A peer that ends normally
    posts ``"exited"`` and is no longer watched."""

    def __init__(self, client: Any, process_id: int, num_processes: int, timeout: float):
        self.client, self.me, self.timeout = client, process_id, timeout
        self.interval = min(max(timeout / 10, 0.05), 2.0)
        self.stopped = threading.Event()
        self.farewell = _EXITED
        now = time.monotonic()
        self.last_round = now
        self.seen: dict[int, tuple[str, float]] = {
            p: ("", now) for p in range(num_processes) if p != process_id
        }
        self.threads = [
            threading.Thread(target=self._beat, name="eggroll-heartbeat", daemon=True),
            threading.Thread(target=self._check, name="eggroll-peer-check", daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self, failed: bool = False) -> None:
        """Stop watching and tell the peers this process ends, normally or ``failed``; waits
        at most one round plus 5 s for the coordinator to take the message."""
        if self.stopped.is_set():
            return
        self.farewell = _FAILED if failed else _EXITED
        self.stopped.set()
        self.threads[0].join(timeout=self.interval + 5.0)

    def _beat(self) -> None:
        key = f"{_HEARTBEAT_PREFIX}{self.me}"
        count = 0
        while not self.stopped.is_set():
            count += 1
            try:
                self.client.key_value_set(key, str(count), allow_overwrite=True)
                entries = self.client.key_value_dir_get(_HEARTBEAT_PREFIX)
            except Exception as err:
                if self.stopped.is_set():
                    break
                first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
                exit_peer_lost(f"the coordinator (process 0) does not answer: {first_line}")
            now = time.monotonic()
            for name, value in entries:
                try:
                    peer = int(name.rstrip("/").rsplit("/", 1)[-1])
                except ValueError:
                    continue
                if peer in self.seen and self.seen[peer][0] != value:
                    self.seen[peer] = (value, now)
            self.last_round = now
            self.stopped.wait(self.interval)
        try:  # the last word, after the last counter
            self.client.key_value_set(key, self.farewell, allow_overwrite=True)
        except Exception:  # the coordinator is gone: nothing left to tell
            pass

    def _check(self) -> None:
        while not self.stopped.wait(self.interval):
            now = time.monotonic()
            if self.stopped.is_set():
                return
            if now - self.last_round > self.timeout:
                exit_peer_lost(
                    f"the coordinator (process 0) did not answer for {self.timeout:g} s "
                    "(it is frozen, dead or unreachable)"
                )
            for peer, (value, since) in list(self.seen.items()):
                if value == _FAILED:
                    exit_peer_lost(f"process {peer} stopped with an error (see its log)")
                if value != _EXITED and now - since > self.timeout:
                    exit_peer_lost(
                        f"process {peer} (JAX task {peer}) sent no heartbeat for "
                        f"{self.timeout:g} s (it is frozen, dead or unreachable)"
                    )


_watch: _PeerWatch | None = None


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_timeout_seconds: float = DEFAULT_HEARTBEAT_TIMEOUT,
) -> None:
    """Join a multi-process JAX job (one process per host, or several on one machine).

    With no arguments JAX's own cluster detection is used (SLURM, Open MPI, …); otherwise all
    three must be given, e.g. ``initialize("10.0.0.1:1234", 2, 0)``. On CPU the gloo
    collectives are selected.

    A peer process that freezes (``kill -STOP``, a hung host), dies or is cut off makes every
    other process print ``eggroll: process I of N lost contact with a peer process: …`` and
    exit with code :data:`EXIT_PEER_LOST` (75) instead of hanging in a collective. A watchdog
    (two daemon threads) exchanges a sign of life with every peer through the coordinator's
    key-value store every ``heartbeat_timeout_seconds / 10`` seconds (at most every 2 s) and
    acts when a peer has been silent for ``heartbeat_timeout_seconds``: the exit comes at most
    ``heartbeat_timeout_seconds`` plus two rounds after the freeze, **24 s with the default
    20 s**. A killed peer is usually caught sooner, by the failed collective
    (:func:`is_peer_failure`, used by ``eggroll.train.cluster.run_guarded``).

    JAX's own heartbeat is set to ``2 × heartbeat_timeout_seconds + 10`` s so the watchdog acts
    first: when it fires it aborts the process (exit 134, a C++ stack trace), and jaxlib 0.10
    gives Python no way to replace that (its ``missed_heartbeat_callback`` cannot pass the
    status to a Python function and terminates the process instead). It stays as the backstop
    when the watchdog cannot run (a C extension holding the GIL the whole time). For the same
    reason a *killed coordinator* (process 0) still aborts the others at once with JAX's
    message and exit 134.

    A process that ends normally tells its peers (at interpreter exit, before JAX's shutdown
    barrier), which stop watching it; end a run by exiting the interpreter or with
    :func:`shutdown`, not ``jax.distributed.shutdown``. After an error, :func:`leave` with
    ``failed=True`` makes the peers exit with code 75 at once rather than wait in their next
    collective.
    """
    global _watch
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
    if not heartbeat_timeout_seconds > 0:
        raise ValueError(f"heartbeat_timeout_seconds must be > 0, got {heartbeat_timeout_seconds}")
    # CPU arrays need a collectives backend across processes; GPUs use their own (NCCL).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        heartbeat_timeout_seconds=math.ceil(2 * heartbeat_timeout_seconds + 10),
    )
    from jax._src import distributed as jax_distributed

    state = jax_distributed.global_state
    if state.num_processes > 1 and state.client is not None:
        _watch = _PeerWatch(
            state.client, state.process_id, state.num_processes, float(heartbeat_timeout_seconds)
        )
        _watch.start()
        # Registered after JAX's own exit handler, so it runs first: the peers hear that this
        # process ends before JAX's shutdown barrier waits for them.
        atexit.register(leave)


def leave(failed: bool = False) -> None:
    """Stop the peer watchdog and tell the peers this process is leaving: normally (they stop
    watching it) or, with ``failed=True``, after an error (they exit with code 75 at once). A
    no-op without a watchdog or when called again."""
    global _watch
    if _watch is not None:
        _watch.stop(failed=failed)
        _watch = None


def shutdown() -> None:
    """Leave the multi-process job: :func:`leave`, then ``jax.distributed.shutdown()``, which
    waits for every process."""
    leave()
    jax.distributed.shutdown()


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
