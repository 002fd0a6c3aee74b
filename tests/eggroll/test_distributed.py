"""The population split over devices and processes gives the same parameters as 1 device.

Runs tests/eggroll/_sharded_run.py in subprocesses: 1 CPU device; 4 simulated devices
(``--xla_force_host_platform_device_count=4``); and 2 processes × 2 devices joined with
``jax.distributed`` on 127.0.0.1 (gloo collectives).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HELPER = Path(__file__).with_name("_sharded_run.py")


def _env(devices: int) -> dict:
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )


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
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(4),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "population_size=6 does not divide over 4 devices" in out


def test_only_population_sized_data_crosses_devices():
    """The compiled generation's collectives move the N = 16 scores, never a parameter-sized
    operand (the matrices have ≥ 3840 entries)."""
    import json

    out = subprocess.run(
        [sys.executable, str(HELPER), "--collectives"],
        env=_env(4),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    collectives = json.loads(out.strip().splitlines()[-1])
    assert collectives, "expected at least the gather of the scores"
    assert all(elements <= 16 for _, elements in collectives), collectives
