"""scripts/es_pretrain.py end to end at tiny size: summary, checkpoints, bitwise resume."""

import json

import jax
import numpy as np
import pytest

import eggroll as egg
from tests.scripts.helpers import load_script

es_pretrain = load_script("es_pretrain")

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
    "3",
    "--valid-bytes",
    "2048",
    "--final-valid-bytes",
    "4096",
    "--valid-streams",
    "4",
    "--log-every",
    "2",
    "--no-progress",
]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    words = [b"alpha ", b"beta ", b"gamma ", b"delta\n", b"(x) ", b"= 1; "]
    for i in range(12):
        text = b"".join(words[j] for j in rng.integers(0, len(words), 400))
        (root / f"doc{i:02d}.txt").write_bytes(text)
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EGGROLL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _state(run_dir):
    doc = egg.checkpoint.read(run_dir / "checkpoint.msgpack")
    return {leaf["path"]: np.frombuffer(leaf["data"], np.uint8) for leaf in doc["leaves"]}, doc


def test_run_writes_summary_metrics_curve_and_learns(corpus_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    summary = es_pretrain.main(
        ["--data", str(corpus_dir), "--run-dir", str(run_dir), "--steps", "60", *TINY]
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads((run_dir / "summary.json").read_text())
    for key in (
        "valid_bits_per_byte",
        "train_bits_per_byte",
        "baselines",
        "tokens_per_second",
        "inference_tokens_per_second",
        "wall_seconds",
        "steps",
        "population_size",
    ):
        assert key in summary, key
    assert set(summary["baselines"]) == {"unigram", "bigram", "lzma"}
    assert summary["steps"] == 60 and summary["population_size"] == 16
    assert summary["tokens_per_second"] > 0 and summary["inference_tokens_per_second"] > 0
    assert (run_dir / "curve.png").stat().st_size > 1000
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r["train_bits_per_byte"] for r in records if "train_bits_per_byte" in r]
    assert len(train) == 60
    # Learning progress on an easy corpus: late training loss well below the first steps.
    assert np.mean(train[-10:]) < np.mean(train[:10]) - 1.0, train
    assert summary["valid_bits_per_byte"] < 8.0


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(corpus_dir, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ["--data", str(corpus_dir), *TINY, "--checkpoint-every", "3"]
    es_pretrain.main([*common, "--run-dir", str(straight), "--steps", "6"])
    es_pretrain.main([*common, "--run-dir", str(split), "--steps", "3"])
    es_pretrain.main([*common, "--run-dir", str(split), "--steps", "6", "--resume"])
    a, doc_a = _state(straight)
    b, doc_b = _state(split)
    assert a.keys() == b.keys()
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=path)
    assert doc_a["metadata"]["streams"] == doc_b["metadata"]["streams"]
    steps = [
        json.loads(x)["step"]
        for x in (split / "metrics.jsonl").read_text().splitlines()
        if "train_bits_per_byte" in x
    ]
    assert steps == list(range(1, 7))  # no duplicated or missing records after resume


def test_existing_run_needs_resume_and_resume_needs_a_checkpoint(corpus_dir, tmp_path):
    run_dir = tmp_path / "run"
    es_pretrain.main(["--data", str(corpus_dir), "--run-dir", str(run_dir), "--steps", "2", *TINY])
    with pytest.raises(SystemExit, match="--resume"):
        es_pretrain.main(["--data", str(corpus_dir), "--run-dir", str(run_dir), *TINY])
    with pytest.raises(SystemExit, match="no checkpoint"):
        es_pretrain.main(
            ["--data", str(corpus_dir), "--run-dir", str(tmp_path / "new"), "--resume", *TINY]
        )


def test_resume_with_a_different_model_is_refused(corpus_dir, tmp_path):
    run_dir = tmp_path / "run"
    es_pretrain.main(["--data", str(corpus_dir), "--run-dir", str(run_dir), "--steps", "2", *TINY])
    with pytest.raises(egg.checkpoint.CheckpointError, match="population_size: saved 16, now 32"):
        es_pretrain.main(
            [
                "--data",
                str(corpus_dir),
                "--run-dir",
                str(run_dir),
                "--resume",
                *TINY,
                "--population",
                "32",
            ]
        )


def test_bad_data_and_bad_flags(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        es_pretrain.main(
            ["--data", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "r"), *TINY]
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty|no files|no bytes"):
        es_pretrain.main(["--data", str(empty), "--run-dir", str(tmp_path / "r2"), *TINY])
    for flags, message in (
        (["--population", "15"], "multiple of --group-size"),
        (["--group-size", "3"], "must be even"),
        (["--steps", "0"], "--steps must be"),
    ):
        with pytest.raises(SystemExit):
            es_pretrain.main([*TINY, *flags])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists() or not (tmp_path / "r" / "checkpoint.msgpack").exists()


def test_devices_count_is_reported(corpus_dir, tmp_path):
    summary = es_pretrain.main(
        ["--data", str(corpus_dir), "--run-dir", str(tmp_path / "d"), "--steps", "1", *TINY]
    )
    assert summary["devices"] == jax.device_count()
