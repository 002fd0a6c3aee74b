"""pretrain and finetune as two processes on 127.0.0.1 (jax.distributed, gloo): the same
parameters as one process, only process 0 writes, and a killed peer makes the survivor exit
promptly. The single-process runs start ``scripts/*.py``, the pairs ``python -m
eggroll.train.cli APP``: both entry points run the same command."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from eggroll.train import cluster
from tests.train.helpers import WORDS, command, free_port, leaves, subprocess_env

TINY = [
    "--width", "16", "--layers", "1", "--population", "16", "--seq-len", "12",
    "--valid-every", "4", "--valid-bytes", "2048", "--final-valid-bytes", "4096",
    "--valid-streams", "4", "--log-every", "2", "--no-progress", "--checkpoint-every", "4",
]  # fmt: skip
FINETUNE_TINY = [
    "--digits", "1", "--format-weight", "1",
    "--base-steps", "150", "--base-hidden", "16", "--base-layers", "1", "--base-batch", "16",
    "--prompts", "4", "--group", "4", "--sigma", "0.01", "--lr", "0.001",
    "--eval-problems", "16", "--eval-every", "2", "--checkpoint-every", "2",
    "--seconds", "0", "--generations", "4", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp")
    rng = np.random.default_rng(1)
    (root / "data.txt").write_bytes(b"".join(WORDS[i] for i in rng.integers(0, 6, 20000)))
    return root


def cluster_flags(port, pid) -> list[str]:
    if pid is None:
        return []
    return ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(pid)]


def launch(args, cache, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        env=subprocess_env(cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def launch_pretrain(corpus, run_dir, steps, port, pid, **kw):
    entry = command("script" if pid is None else "module", "pretrain")
    args = [*entry, "--data", str(corpus / "data.txt"), *TINY, "--steps", str(steps)]
    return launch([*args, "--run-dir", str(run_dir), *cluster_flags(port, pid)], corpus, **kw)


def assert_pair_matches_single(start, tmp_path):
    """Run ``start(run_dir, port, pid)`` as one process, then as two (pids 0 and 1): both end,
    only process 0 prints the summary, and the checkpointed parameters are bitwise equal."""
    single = start(tmp_path / "single", None, None)
    _, err = single.communicate(timeout=300)
    assert single.returncode == 0, err
    port = free_port()
    procs = [start(tmp_path / "multi", port, pid) for pid in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    summaries = [[x for x in out.splitlines() if x.startswith("{")] for out, _ in outputs]
    assert len(summaries[0]) == 1 and not summaries[1]  # only process 0 prints the summary
    assert json.loads(summaries[0][0])["processes"] == 2
    a, b = leaves(tmp_path / "single", "params"), leaves(tmp_path / "multi", "params")
    assert a.keys() == b.keys() and a
    for path in a:
        assert a[path] == b[path], path


def test_two_processes_match_one_process_bitwise(corpus, tmp_path):
    assert_pair_matches_single(
        lambda run_dir, port, pid: launch_pretrain(corpus, run_dir, 6, port, pid), tmp_path
    )


def test_killed_peer_makes_the_survivor_exit_with_a_message(corpus, tmp_path):
    port = free_port()
    run_dir = tmp_path / "run"
    procs = [
        launch_pretrain(corpus, run_dir, 100_000, port, pid, start_new_session=True)
        for pid in range(2)
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
        assert procs[0].returncode == cluster.EXIT_PEER_LOST, err[-2000:]
        assert elapsed < 60, elapsed
        assert "lost contact with a peer process" in err, err[-2000:]
        assert "Traceback" not in err, err[-2000:]
        named = ("127.0.0.1" in err, "task 1" in err.lower(), "process 1" in err)
        assert any(named), err[-2000:]  # the message names the lost peer
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()


def launch_finetune(cache, run_dir, port, pid):
    entry = command("script" if pid is None else "module", "finetune")
    args = [*entry, *FINETUNE_TINY, "--run-dir", str(run_dir), *cluster_flags(port, pid)]
    return launch(args, cache)


def test_finetune_two_processes_match_one_process_bitwise(tmp_path):
    pytest.importorskip("tokenizers")
    # The single run goes first and makes the base model the pair then reads from the cache.
    assert_pair_matches_single(
        lambda run_dir, port, pid: launch_finetune(tmp_path, run_dir, port, pid), tmp_path
    )
    rows = (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()
    moved = [json.loads(r)["update_norm_lowrank"] for r in rows if "update_norm" in r]
    assert len(moved) == 4 and all(m > 0 for m in moved)  # the compared parameters did move
