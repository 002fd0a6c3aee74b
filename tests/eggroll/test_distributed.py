"""The population split over devices and processes gives the same parameters as 1 device.

Runs tests/eggroll/_sharded_run.py in subprocesses: 1 CPU device; 4 simulated devices
(``--xla_force_host_platform_device_count=4``); and 2 processes × 2 devices joined with
``jax.distributed`` on 127.0.0.1 (gloo collectives).
"""

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.xla import xla_flags

HELPER = Path(__file__).with_name("_sharded_run.py")


def _env(devices: int) -> dict:
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=xla_flags(devices=devices),
    )


def _stdout(argv: list[str], devices: int, timeout: int) -> str:
    """What ``python ARGV`` prints on ``devices`` simulated CPU devices (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, *argv],
        env=_env(devices),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(devices: int, out: Path) -> dict:
    subprocess.run(
        [sys.executable, str(HELPER), str(out)], check=True, env=_env(devices), timeout=300
    )
    return dict(np.load(out))


def _run_two_processes(out: Path) -> list[dict]:
    port = str(free_port())
    procs = [
        subprocess.Popen([sys.executable, str(HELPER), str(out), str(pid), "2", port], env=_env(2))
        for pid in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    return [dict(np.load(str(out).replace(".npz", f".p{pid}.npz"))) for pid in range(2)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    one = _run(1, root / "one.npz")
    four = _run(4, root / "four.npz")
    p0, p1 = _run_two_processes(root / "multi.npz")
    return one, four, p0, p1


def test_devices_and_processes_were_used(runs):
    one, four, p0, p1 = runs
    assert int(one["devices"]) == 1 and int(four["devices"]) == 4
    assert int(p0["devices"]) == 4 and int(p0["processes"]) == 2


def test_integer_engine_is_bitwise_identical_everywhere(runs):
    one, four, p0, p1 = runs
    for other in (four, p0, p1):
        for name in ("iw", "sliced_iw", "sliced_residual"):
            np.testing.assert_array_equal(one[name], other[name])
    assert np.abs(one["iw"]).max() > 0  # it moved
    assert np.abs(one["sliced_iw"]).max() > 0


def test_float_engine_agrees_within_1e6_relative(runs):
    one, four, p0, p1 = runs
    for other in (four, p0, p1):
        for name in ("w1", "b1", "w2"):
            np.testing.assert_allclose(other[name], one[name], rtol=1e-6, atol=1e-7)
    for name in ("w1", "b1", "w2"):  # both processes hold the same replicated parameters
        np.testing.assert_array_equal(p0[name], p1[name])


def test_population_must_divide_over_devices():
    code = (
        "import eggroll as egg\n"
        "try:\n    egg.EGGROLL(6, sigma=0.1)\nexcept ValueError as e:\n    print(e)\n"
    )
    out = _stdout(["-c", code], devices=4, timeout=120)
    assert "population_size=6 does not divide over 4 devices" in out


def test_only_population_sized_data_crosses_devices():
    """The compiled generation's collectives move the N = 16 scores, never a parameter-sized
    operand (the matrices have ≥ 3840 entries); the integer engine gathers one int8 sign per
    antithetic pair (8 bytes for N = 16), not 32-bit scores."""
    import json

    out = _stdout([str(HELPER), "--collectives"], devices=4, timeout=300)
    collectives = json.loads(out.strip().splitlines()[-1])
    assert any(c[0] == "float" for c in collectives), "expected the gather of the scores"
    assert all(elements <= 16 for _, _, _, elements in collectives), collectives
    integer = [c for c in collectives if c[0] == "integer"]
    gathers = [c for c in integer if c[1] == "all-gather"]
    assert gathers == [["integer", "all-gather", "s8", 8]], integer
    # Anything else the integer generation sends is a scalar (the logged statistics).
    assert all(elements == 1 for _, op, _, elements in integer if op != "all-gather"), integer


# The peer watchdog of eggroll.distributed.initialize, with an in-memory key-value store in
# place of the coordinator's (the two-process runs are in test_multiprocess_faults.py).


class _FakeStore:
    """The two calls the watchdog makes on JAX's distributed client."""

    def __init__(self):
        self.values: dict[str, str] = {}
        self.hang = threading.Event()
        self.fail: Exception | None = None

    def key_value_set(self, key, value, allow_overwrite=False):
        if self.fail is not None:
            raise self.fail
        while self.hang.is_set():
            time.sleep(0.01)
        self.values[key] = value

    def key_value_dir_get(self, prefix):
        return [(k, v) for k, v in self.values.items() if k.startswith(prefix)]


# The stand-in for os._exit raises SystemExit in the watchdog's thread; pytest reports that.
_thread_exits = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def _watch(monkeypatch, store, peers=3, timeout=0.4):
    from eggroll import distributed

    reasons: list[str] = []

    def record(reason):
        reasons.append(reason)
        raise SystemExit  # ends the watchdog's thread, as os._exit would end the process

    monkeypatch.setattr(distributed, "exit_peer_lost", record)
    watch = distributed._PeerWatch(store, 0, peers, timeout)
    watch.start()
    return watch, reasons


def _beat(store, peer, seconds, period=0.02):
    end = time.monotonic() + seconds
    count = 0
    while time.monotonic() < end:
        count += 1
        store.values[f"eggroll/heartbeat/{peer}"] = str(count)
        time.sleep(period)


def _wait_for(reasons, seconds):
    end = time.monotonic() + seconds
    while not reasons and time.monotonic() < end:
        time.sleep(0.01)


@_thread_exits
def test_watchdog_names_the_silent_peer_and_spares_the_others(monkeypatch):
    store = _FakeStore()
    watch, reasons = _watch(monkeypatch, store)
    store.values["eggroll/heartbeat/2"] = "1"
    started = time.monotonic()
    _beat(store, 1, 0.3)  # peer 1 beats, peer 2 has been silent from the start
    assert not reasons  # within the timeout: nobody is lost yet
    threading.Thread(target=_beat, args=(store, 1, 2.0), daemon=True).start()
    _wait_for(reasons, 2.0)
    elapsed = time.monotonic() - started
    watch.stop()
    assert reasons and reasons[0].startswith(
        "process 2 (JAX task 2) sent no heartbeat for 0.4 s"
    ), reasons
    assert 0.35 <= elapsed < 0.4 + 2 * watch.interval + 1.0, elapsed


@_thread_exits
def test_watchdog_lets_a_peer_end_normally_and_acts_on_a_failed_one(monkeypatch):
    store = _FakeStore()
    watch, reasons = _watch(monkeypatch, store, peers=2)
    store.values["eggroll/heartbeat/1"] = "exited"
    time.sleep(1.0)  # far past the timeout
    assert not reasons and not watch.stopped.is_set()
    store.values["eggroll/heartbeat/1"] = "failed"
    _wait_for(reasons, 1.0)
    watch.stop()
    assert reasons == ["process 1 stopped with an error (see its log)"]


@_thread_exits
def test_watchdog_acts_when_the_coordinator_stops_answering(monkeypatch):
    store = _FakeStore()
    watch, reasons = _watch(monkeypatch, store, peers=2)
    _beat(store, 1, 0.2)
    store.hang.set()  # calls to the coordinator block, as with a frozen process 0
    _wait_for(reasons, 2.0)
    assert reasons and reasons[0].startswith("the coordinator (process 0) did not answer for")
    watch.stopped.set()
    store.hang.clear()

    store = _FakeStore()
    store.fail = RuntimeError("UNAVAILABLE: Connection reset by peer\nmore")
    watch, reasons = _watch(monkeypatch, store, peers=2)
    _wait_for(reasons, 1.0)
    watch.stopped.set()
    assert reasons == [
        "the coordinator (process 0) does not answer: UNAVAILABLE: Connection reset by peer"
    ]


@_thread_exits
def test_leaving_posts_the_farewell_after_the_last_heartbeat(monkeypatch):
    store = _FakeStore()
    watch, reasons = _watch(monkeypatch, store, peers=2)
    _beat(store, 1, 0.1)
    watch.stop(failed=True)
    assert store.values["eggroll/heartbeat/0"] == "failed"
    time.sleep(0.2)
    assert store.values["eggroll/heartbeat/0"] == "failed" and not reasons


def test_peer_failures_are_told_from_other_errors():
    import jax

    from eggroll import distributed

    gloo = ValueError(
        "UNKNOWN: Gloo AllGather failed: [external/gloo/gloo/transport/tcp/pair.cc:538] Read "
        "error [127.0.0.1]:17325: Connection reset by peer"
    )
    assert distributed.is_peer_failure(gloo)
    assert distributed.is_peer_failure(jax.errors.JaxRuntimeError("INTERNAL: anything"))
    assert not distributed.is_peer_failure(ValueError("population_size=6 does not divide"))
    assert not distributed.is_peer_failure(OSError("Connection reset by peer"))  # not a collective


def test_initialize_checks_the_heartbeat_timeout():
    from eggroll import distributed

    with pytest.raises(ValueError, match="heartbeat_timeout_seconds must be > 0"):
        distributed.initialize("127.0.0.1:1", 2, 0, heartbeat_timeout_seconds=0)
