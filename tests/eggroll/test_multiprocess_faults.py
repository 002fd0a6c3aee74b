"""Two processes on 127.0.0.1 (jax.distributed, gloo) running a loop of collectives under
``run_guarded``: a frozen (``SIGSTOP``), killed or failed peer makes the other process print
one line and exit with code 75 within the documented bound; a peer that ends normally does
not."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.xla import xla_flags

TIMEOUT = 2.0  # heartbeat_timeout_seconds for these runs (production default: 20)
INTERVAL = TIMEOUT / 10  # the watchdog's round, see eggroll.distributed.initialize
BOUND = TIMEOUT + 2 * INTERVAL  # documented: freeze to exit
SLACK = 6.0  # a busy 2-core test machine
EXIT_PEER_LOST = 75

WORKER = """
import sys, time
import numpy as np
from eggroll import distributed
from eggroll.train.cluster import run_guarded

pid, port, timeout, mode = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
distributed.initialize(f"127.0.0.1:{port}", 2, pid, heartbeat_timeout_seconds=timeout)
from jax.experimental import multihost_utils


def work():
    for step in range(10**9):
        total = multihost_utils.process_allgather(np.asarray([step, pid])).sum()
        if step == 0:
            print("ready", total, flush=True)
        if mode == "end" and step == 20:
            if pid == 0:
                time.sleep(3 * timeout)  # e.g. writing the last checkpoint, no collective
            return "done"
        if mode == "fail" and pid == 1 and step == 20:
            raise ArithmeticError("a bug in process 1")
        time.sleep(0.005)


print(run_guarded(work), flush=True)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(mode: str) -> list[subprocess.Popen]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(devices=1))
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(pid), port, str(TIMEOUT), mode],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in range(2)
    ]
    for proc in procs:
        line = "-"
        while line and not line.startswith("ready"):  # gloo prints its own lines first
            line = proc.stdout.readline()
        if not line:
            _kill_all(procs)
            pytest.fail(f"a worker did not start: {proc.stderr.read()[-2000:]}")
    return procs


def _kill_all(procs) -> list[str]:
    """Kill what still runs (a stopped process too); returns each one's remaining stderr."""
    errs = []
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        errs.append(proc.communicate(timeout=30)[1] or "")
    return errs


@pytest.mark.parametrize("frozen", [1, 0], ids=["peer", "coordinator"])
def test_frozen_peer_makes_the_other_exit_75_within_the_bound(frozen):
    procs = _start("loop")
    try:
        time.sleep(0.5)
        os.kill(procs[frozen].pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        survivor = procs[1 - frozen]
        _, err = survivor.communicate(timeout=BOUND + 60)
        elapsed = time.monotonic() - stopped_at
        assert survivor.returncode == EXIT_PEER_LOST, err[-3000:]
        assert elapsed < BOUND + SLACK, elapsed
        lines = [x for x in err.splitlines() if x.startswith("eggroll:")]
        assert len(lines) == 1, err[-3000:]
        assert lines[0].startswith(
            f"eggroll: process {1 - frozen} of 2 lost contact with a peer process: "
        )
        culprit = (
            "process 1 (JAX task 1) sent no heartbeat" if frozen else "the coordinator (process 0)"
        )
        assert culprit in lines[0], lines[0]
        assert "Check failure stack trace" not in err  # not JAX's abort
    finally:
        _kill_all(procs)


def test_killed_peer_makes_the_other_exit_75_at_once():
    procs = _start("loop")
    try:
        time.sleep(0.5)
        procs[1].kill()
        killed_at = time.monotonic()
        _, err = procs[0].communicate(timeout=BOUND + 60)
        elapsed = time.monotonic() - killed_at
        assert procs[0].returncode == EXIT_PEER_LOST, err[-3000:]
        assert elapsed < BOUND + SLACK, elapsed
        assert "eggroll: process 0 of 2 lost contact with a peer process: " in err, err[-3000:]
    finally:
        _kill_all(procs)


def test_failed_peer_makes_the_other_exit_75():
    procs = _start("fail")
    try:
        _, err = procs[0].communicate(timeout=BOUND + 60)
        assert procs[0].returncode == EXIT_PEER_LOST, err[-3000:]
        assert "lost contact with a peer process: process 1 stopped with an error" in err
    finally:
        errs = _kill_all(procs)
    assert "ArithmeticError: a bug in process 1" in errs[1]  # its own error, in its own log


def test_a_peer_that_ends_normally_is_not_lost():
    """Process 1 returns and exits while process 0 works on (no collective) for 3 timeouts."""
    procs = _start("end")
    try:
        outputs = [proc.communicate(timeout=120) for proc in procs]
        for proc, (out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err[-3000:]
            assert out.strip().endswith("done") and "lost contact" not in err
    finally:
        _kill_all(procs)
