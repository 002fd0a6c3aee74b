"""es_pretrain.py and llm_finetune.py as two processes on 127.0.0.1 (jax.distributed, gloo):
same parameters as one process, only process 0 writes, and a killed peer makes the survivor
exit promptly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import eggroll as egg
from tests.scripts.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "es_pretrain.py"
TINY = [
    "--width",
    "16",
    "--layers",
    "1",
    "--population",
    "16",
    "--seq-len",
    "12",
    "--valid-every",
    "4",
    "--valid-bytes",
    "2048",
    "--final-valid-bytes",
    "4096",
    "--valid-streams",
    "4",
    "--log-every",
    "2",
    "--no-progress",
    "--checkpoint-every",
    "4",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp")
    rng = np.random.default_rng(1)
    words = [b"alpha ", b"beta ", b"gamma ", b"delta\n", b"(x) ", b"= 1; "]
    (root / "data.txt").write_bytes(b"".join(words[i] for i in rng.integers(0, 6, 20000)))
    return root


def _env(tmp: Path) -> dict:
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        EGGROLL_CACHE=str(tmp / "cache"),
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
    )


def _launch(corpus, run_dir, steps, port, pid, **kw):
    args = [
        sys.executable,
        str(SCRIPT),
        "--data",
        str(corpus / "data.txt"),
        *TINY,
        "--steps",
        str(steps),
        "--run-dir",
        str(run_dir),
    ]
    if pid is not None:
        args += [
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num-processes",
            "2",
            "--process-id",
            str(pid),
        ]
    return subprocess.Popen(
        args, env=_env(corpus), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def _params(run_dir):
    doc = egg.checkpoint.read(run_dir / "checkpoint.msgpack")
    return {leaf["path"]: leaf["data"] for leaf in doc["leaves"] if "params" in leaf["path"]}


def _assert_pair_matches_single(launch, tmp_path):
    """Run ``launch(run_dir, port, pid)`` as one process, then as two (pids 0 and 1): both end,
    only process 0 prints the summary, and the checkpointed parameters are bitwise equal."""
    single = launch(tmp_path / "single", None, None)
    _, err = single.communicate(timeout=300)
    assert single.returncode == 0, err
    port = free_port()
    procs = [launch(tmp_path / "multi", port, pid) for pid in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    summaries = [[x for x in out.splitlines() if x.startswith("{")] for out, _ in outputs]
    assert len(summaries[0]) == 1 and not summaries[1]  # only process 0 prints the summary
    a, b = _params(tmp_path / "single"), _params(tmp_path / "multi")
    assert a.keys() == b.keys() and a
    for path in a:
        assert a[path] == b[path], path


def test_two_processes_match_one_process_bitwise(corpus, tmp_path):
    _assert_pair_matches_single(
        lambda run_dir, port, pid: _launch(corpus, run_dir, 6, port, pid), tmp_path
    )


def test_killed_peer_makes_the_survivor_exit_with_a_message(corpus, tmp_path):
    port = free_port()
    run_dir = tmp_path / "run"
    procs = [
        _launch(corpus, run_dir, 100_000, port, pid, start_new_session=True) for pid in range(2)
    ]
    try:
        deadline = time.time() + 240
        metrics = run_dir / "metrics.jsonl"
        while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size):
            time.sleep(0.5)
        assert metrics.exists(), "training never started"
        os.killpg(procs[1].pid, signal.SIGKILL)
        killed_at = time.time()
        _, err = procs[0].communicate(timeout=120)
        elapsed = time.time() - killed_at
        assert procs[0].returncode not in (0, None)
        assert elapsed < 60, elapsed
        assert "lost contact with a peer process" in err, err[-2000:]
        assert "127.0.0.1" in err or "task 1" in err.lower(), err[-2000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


FINETUNE_TINY = [
    "--digits", "1", "--format-weight", "1",
    "--base-steps", "150", "--base-hidden", "16", "--base-layers", "1", "--base-batch", "16",
    "--prompts", "4", "--group", "4", "--sigma", "0.01", "--lr", "0.001",
    "--eval-problems", "16", "--eval-every", "2", "--checkpoint-every", "2",
    "--seconds", "0", "--generations", "4", "--no-progress",
]  # fmt: skip


def _launch_finetune(tmp, run_dir, port, pid):
    args = [sys.executable, str(ROOT / "scripts" / "llm_finetune.py"), *FINETUNE_TINY]
    args += ["--run-dir", str(run_dir)]
    if pid is not None:
        args += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
        args += ["--process-id", str(pid)]
    return subprocess.Popen(
        args, env=_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_finetune_two_processes_match_one_process_bitwise(tmp_path):
    pytest.importorskip("tokenizers")
    # The single run goes first and makes the base model the pair then reads from the cache.
    _assert_pair_matches_single(
        lambda run_dir, port, pid: _launch_finetune(tmp_path, run_dir, port, pid), tmp_path
    )
    records = (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()
    moved = [json.loads(r)["update_norm_lowrank"] for r in records if "update_norm" in r]
    assert len(moved) == 4 and all(m > 0 for m in moved)  # the compared parameters did move
