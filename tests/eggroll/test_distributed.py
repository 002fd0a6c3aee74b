"""The population split over 4 simulated CPU devices gives the same parameters as 1 device."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HELPER = Path(__file__).with_name("_sharded_run.py")


def _run(devices: int, out: Path) -> dict:
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    subprocess.run([sys.executable, str(HELPER), str(out)], check=True, env=env, timeout=300)
    return dict(np.load(out))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    return _run(1, root / "one.npz"), _run(4, root / "four.npz")


def test_four_devices_were_used(runs):
    one, four = runs
    assert int(one["devices"]) == 1 and int(four["devices"]) == 4


def test_integer_engine_is_bitwise_identical_across_device_counts(runs):
    one, four = runs
    np.testing.assert_array_equal(one["iw"], four["iw"])
    assert np.abs(one["iw"]).max() > 0  # it moved


def test_float_engine_agrees_within_1e6_relative(runs):
    one, four = runs
    for name in ("w1", "b1", "w2"):
        np.testing.assert_allclose(four[name], one[name], rtol=1e-6, atol=1e-7)


def test_population_must_divide_over_devices():
    code = (
        "import eggroll as egg\n"
        "try:\n    egg.EGGROLL(6, sigma=0.1)\nexcept ValueError as e:\n    print(e)\n"
    )
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "population_size=6 does not divide over 4 devices" in out
