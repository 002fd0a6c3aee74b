"""eggroll.train.pretrain at tiny size: the command (summary, flags, errors) and the library
(callbacks, bitwise resume, finished and extended runs, a validation split too short)."""

import dataclasses
import json
import math
import shutil

import jax
import numpy as np
import pytest

import eggroll as egg
from eggroll.data import text
from eggroll.train import cli, loop, pretrain
from tests.train.helpers import (
    cli_flags,
    final_rows,
    leaves,
    metadata,
    records,
    train_rows,
    write_corpus,
)

# One set of shapes for every run of this file, so the compiled programs are shared.
TINY = dict(
    width=16, layers=1, population=8, seq_len=16, member_batch=0, valid_streams=4,
    valid_bytes=512, final_valid_bytes=1024, valid_every=2, log_every=1, progress=False,
)  # fmt: skip
TINY_FLAGS = cli_flags(TINY)
METRIC_FIELDS = (
    "valid_bits_per_byte",
    "train_bits_per_byte",
    "steps",
    "tokens",
    "data_tokens",
    "tokens_per_second",
    "train_seconds",
)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def config(corpus_dir, run_dir, **changes) -> pretrain.Config:
    return pretrain.Config(data=str(corpus_dir), run_dir=str(run_dir), **{**TINY, **changes})


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def finished(corpus_dir, tmp_path_factory):
    """A finished 4-step run (checkpoints at 2 and 4); tests work on copies of its folder."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    summary = pretrain.run(config(corpus_dir, run_dir, steps=4, checkpoint_every=2), say=quiet)
    return run_dir, summary


def copy_run(finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished[0], run_dir)
    return run_dir


def test_command_writes_summary_metrics_curve_and_learns(corpus_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["--data", str(corpus_dir), "--run-dir", str(run_dir), "--steps", "60", *TINY_FLAGS]
    summary = cli.run_application("pretrain", [*argv, "--valid-every", "20", "--log-every", "10"])
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
        "devices",
    ):
        assert key in summary, key
    assert set(summary["baselines"]) == {"unigram", "bigram", "lzma"}
    assert summary["steps"] == 60 and summary["population_size"] == 8
    assert summary["devices"] == jax.device_count()
    assert summary["tokens_per_second"] > 0 and summary["inference_tokens_per_second"] > 0
    assert (run_dir / "curve.png").stat().st_size > 1000
    rows = train_rows(run_dir, "train_bits_per_byte")
    assert [r["step"] for r in rows] == list(range(1, 61))  # every generation, log_every 10
    assert [r["tokens"] for r in rows] == [64 * s for s in range(1, 61)]  # running total
    valid = [r for r in records(run_dir) if "valid_bits_per_byte" in r]
    assert [r["step"] for r in valid] == [20, 40, 60] and valid[-1]["final"] is True
    train = [r["train_bits_per_byte"] for r in rows]
    # Learning progress on an easy corpus: late training loss well below the first steps.
    assert np.mean(train[-10:]) < np.mean(train[:10]) - 1.0, train
    assert summary["valid_bits_per_byte"] < 8.0


def test_run_returns_a_summary_and_calls_every_kind_of_callback(corpus_dir, tmp_path, capsys):
    class Recorder(loop.Callback):
        def __init__(self):
            self.steps, self.evaluations = [], []

        def on_record(self, record):
            self.steps.append(record["step"])

        def on_evaluation(self, record):
            self.evaluations.append((record["step"], record.get("final", False)))

    recorder, seen = Recorder(), []
    summary = pretrain.run(
        config(corpus_dir, tmp_path / "run", steps=4),
        callbacks=[recorder, loop.print_every(2, keys=["train_bits_per_byte"]), seen.append],
        say=quiet,
    )
    assert math.isfinite(summary["valid_bits_per_byte"]) and summary["steps"] == 4
    assert summary["stopped_by"] == "steps" and summary["tokens"] == 4 * 4 * 16
    assert recorder.steps == [1, 2, 3, 4] and [r["step"] for r in seen] == [1, 2, 3, 4]
    assert all(math.isfinite(r["train_bits_per_byte"]) for r in seen)
    assert recorder.evaluations == [(2, False), (4, True)]
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step=")]
    assert [line.split()[0] for line in printed] == ["step=2", "step=2", "step=4", "step=4"]
    assert printed[0] == f"step=2 train_bits_per_byte={seen[1]['train_bits_per_byte']:.4g}"


def test_a_callback_can_stop_the_run(corpus_dir, tmp_path):
    summary = pretrain.run(
        config(corpus_dir, tmp_path / "run", steps=4),
        callbacks=[lambda record: record["step"] == 2],
        say=quiet,
    )
    assert summary["steps"] == 2 and summary["stopped_by"] == "callback"
    assert math.isfinite(summary["valid_bits_per_byte"])
    assert [r["step"] for r in final_rows(tmp_path / "run")] == [2]


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(corpus_dir, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    pretrain.run(config(corpus_dir, straight, steps=6, checkpoint_every=3), say=quiet)
    pretrain.run(config(corpus_dir, split, steps=3, checkpoint_every=3), say=quiet)
    resumed = pretrain.run(
        config(corpus_dir, split, steps=6, checkpoint_every=3, resume=True), say=quiet
    )
    a, b = leaves(straight), leaves(split)
    assert a.keys() == b.keys() and a
    for path in a:
        assert a[path] == b[path], path
    assert metadata(straight)["host"]["streams"] == metadata(split)["host"]["streams"]
    steps = [r["step"] for r in train_rows(split, "train_bits_per_byte")]
    assert steps == list(range(1, 7))  # no duplicated or missing records after resume
    assert [r["step"] for r in final_rows(split)] == [6]
    assert (
        resumed["valid_bits_per_byte"]
        == json.loads((straight / "summary.json").read_text())["valid_bits_per_byte"]
    )


def test_resuming_a_finished_run_changes_nothing(corpus_dir, finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    lines = (run_dir / loop.METRICS).read_text().splitlines()
    again = pretrain.run(
        config(corpus_dir, run_dir, steps=4, checkpoint_every=2, resume=True),
        say=quiet,
    )
    assert again["valid_bits_per_byte"] is not None
    for key in METRIC_FIELDS:
        assert again[key] == finished[1][key], key
    assert (run_dir / loop.METRICS).read_text().splitlines() == lines  # no row added
    assert len(final_rows(run_dir)) == 1 and records(run_dir)[-1]["final"] is True


def test_extending_a_finished_run_keeps_one_final_row_at_the_end(corpus_dir, finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    more = pretrain.run(
        config(corpus_dir, run_dir, steps=6, checkpoint_every=2, resume=True),
        say=quiet,
    )
    assert more["steps"] == 6 and math.isfinite(more["valid_bits_per_byte"])
    rows = records(run_dir)
    assert [r["step"] for r in rows if r.get("final")] == [6] and rows[-1]["final"] is True
    assert [r["step"] for r in rows if "train_bits_per_byte" in r] == list(range(1, 7))
    assert [r["tokens"] for r in rows if "train_bits_per_byte" in r] == [
        64 * s for s in range(1, 7)
    ]


def test_existing_run_needs_resume_and_resume_needs_a_checkpoint(
    corpus_dir, finished, tmp_path, capsys
):
    run_dir = copy_run(finished, tmp_path)
    argv = ["--data", str(corpus_dir), *TINY_FLAGS]
    with pytest.raises(SystemExit) as exit_:
        cli.run_application("pretrain", [*argv, "--run-dir", str(run_dir)])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "already holds a checkpoint: pass --resume" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exit_:
        cli.run_application("pretrain", [*argv, "--run-dir", str(tmp_path / "new"), "--resume"])
    assert exit_.value.code == 1
    assert "--resume: no checkpoint at" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_resume_with_a_different_model_is_refused(corpus_dir, finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path)
    before = (run_dir / loop.CHECKPOINT).read_bytes()
    changed = config(corpus_dir, run_dir, steps=4, resume=True, population=16)
    with pytest.raises(egg.checkpoint.CheckpointError, match="population_size: saved 8, now 16"):
        pretrain.run(changed, say=quiet)
    with pytest.raises(SystemExit) as exit_:  # the command: one line, exit 1
        cli.run_application(
            "pretrain",
            ["--data", str(corpus_dir), "--run-dir", str(run_dir), "--resume", *TINY_FLAGS,
             "--steps", "4", "--population", "16"],
        )  # fmt: skip
    assert exit_.value.code == 1
    assert "population_size: saved 8, now 16" in capsys.readouterr().err
    assert (run_dir / loop.CHECKPOINT).read_bytes() == before


def test_bad_data_and_bad_flags(tmp_path, capsys):
    run = lambda *argv: cli.run_application("pretrain", [*TINY_FLAGS, *argv])  # noqa: E731
    with pytest.raises(FileNotFoundError, match="nowhere"):
        pretrain.run(pretrain.Config(data=str(tmp_path / "nowhere"), run_dir=str(tmp_path / "r")))
    with pytest.raises(SystemExit) as exit_:
        run("--data", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "r"))
    assert exit_.value.code == 1 and "nowhere" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_:
        run("--data", str(empty), "--run-dir", str(tmp_path / "r2"))
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert any(word in err for word in ("empty", "no files", "no bytes")), err
    for flags, message in (
        (["--population", "15"], "multiple of --group-size"),
        (["--group-size", "3"], "must be even"),
        (["--steps", "0"], "--steps must be ≥ 1, got 0"),
        (["--noise", "dice"], "--noise must be one of"),
        (["--minutes", "-1"], "--minutes must be ≥ 0"),
    ):
        with pytest.raises(SystemExit) as exit_:
            run(*flags)
        assert exit_.value.code == 2, flags
        assert message in capsys.readouterr().err, flags
    for name in ("r", "r2"):
        assert not (tmp_path / name / loop.CHECKPOINT).exists()


def test_a_validation_split_too_short_for_seq_len_fails_before_training(tmp_path, capsys):
    """A file the hashed split puts in validation, shorter than one --seq-len window."""
    data = tmp_path / "data"
    data.mkdir()
    valid_names = [f"short{i}.txt" for i in range(200) if text._in_valid(f"short{i}.txt", 0.05)]
    train_names = [f"long{i}.txt" for i in range(50) if not text._in_valid(f"long{i}.txt", 0.05)]
    (data / valid_names[0]).write_bytes(b"tiny text")  # 9 bytes < --seq-len 16 + 1
    for name in train_names[:3]:
        (data / name).write_bytes(b"alpha beta gamma delta\n" * 100)
    corpus = text.load_corpus(str(data))
    assert len(corpus.valid) == 9  # the hashed split, not the tail cut
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"--seq-len") as err:
        pretrain.run(pretrain.Config(data=str(data), run_dir=str(run_dir), **TINY), say=quiet)
    assert "9 bytes" in str(err.value)
    assert not (run_dir / loop.CHECKPOINT).exists() and not (run_dir / loop.METRICS).exists()
    with pytest.raises(SystemExit) as exit_:
        cli.run_application(
            "pretrain", ["--data", str(data), "--run-dir", str(run_dir), *TINY_FLAGS]
        )
    assert exit_.value.code == 1 and "--seq-len" in capsys.readouterr().err
    assert not (run_dir / loop.CHECKPOINT).exists()
    # Lowering --seq-len below the split's length makes the same data usable.
    small = dataclasses.replace(pretrain.Config(data=str(data), **TINY), seq_len=4)
    pretrain.check_validation_split(text.load_corpus(small.data), small.seq_len)


def test_the_paper_preset_and_flags_given_with_it(monkeypatch):
    paper = pretrain.preset("paper")
    assert (paper["width"], paper["layers"], paper["seq_len"], paper["sigma_shift"]) == (
        256, 6, 100, 4,
    )  # fmt: skip
    assert (paper["alpha"], paper["alpha_decay"], paper["error_feedback"]) == (1.0, 0.015, False)
    assert paper["population"] == 512  # on a CPU; 2^14 per accelerator elsewhere
    assert pretrain.preset("demo") == {}
    with pytest.raises(ValueError, match="--preset must be one of"):
        pretrain.preset("huge")
    # Flags given with --preset win over it; the rest come from the preset.
    config, _ = cli.parse("pretrain", ["--preset", "paper", "--population", "64"])
    assert (config.width, config.layers, config.population) == (256, 6, 64)
    assert config == pretrain.Config.from_preset("paper", population=64)
    # On an accelerator the population and the member slicing follow the backend.
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(jax, "device_count", lambda: 2)
    assert pretrain.preset("paper")["population"] == 2 << 14
    assert pretrain.Config.from_preset("paper").member_slice == 0  # one vmap on a GPU


def test_member_slices_follow_the_backend_unless_given(monkeypatch):
    assert pretrain.Config().member_slice == pretrain.CPU_MEMBER_SLICE == 32  # the CPU demo
    assert pretrain.Config(member_batch=0).member_slice == 0
    assert pretrain.Config(member_batch=8).member_slice == 8
    with pytest.raises(ValueError, match="--member-batch must be ≥ -1"):
        pretrain.Config(member_batch=-2)
