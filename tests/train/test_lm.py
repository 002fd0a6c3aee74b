"""eggroll.train.lm (the backprop LM baseline) at tiny size: the command writes a loadable
Hugging Face folder that generates; an interrupted run resumes bitwise; bad flags."""

import json

import jax
import numpy as np
import pytest

from eggroll.checkpoint import CheckpointError
from eggroll.models import generate, hf
from eggroll.train import cli, lm, loop
from tests.train.helpers import cli_flags, final_rows, records

pytest.importorskip("safetensors")

TINY = dict(
    hidden=32, layers=1, intermediate=48, seq_len=24, batch_size=4, steps=6, valid_every=3,
    valid_batches=2, log_every=2, progress=False,
)  # fmt: skip
TINY_FLAGS = cli_flags(TINY)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "corpus.txt"
    path.write_bytes(b"".join(b"%d + %d = %d\n" % (i, i, 2 * i) for i in range(2000)))
    return path


def quiet(*_):
    pass


def test_command_writes_a_model_folder_that_loads_and_generates(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    summary = cli.run_application(
        "lm", ["--data", str(data), "--run-dir", str(run_dir), *TINY_FLAGS]
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(
        (run_dir / "summary.json").read_text()
    )
    rows = records(run_dir)
    assert [r["step"] for r in rows if "valid_bits_per_byte" in r] == [3, 6]
    # every step has its row (written at each sync, every --log-every steps)
    assert [r["step"] for r in rows if "train_bits_per_byte" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["tokens"] for r in rows if "train_bits_per_byte" in r] == [
        96 * s for s in range(1, 7)
    ]
    assert [r["step"] for r in final_rows(run_dir)] == [6]
    assert summary["valid_bits_per_byte"] < np.log2(264)  # below a uniform guess already
    assert summary["model_dir"] == str(run_dir / "model")

    params, config = hf.load(run_dir / "model")
    tok = hf.load_tokenizer(run_dir / "model", config)
    assert config.hidden_size == 32 and config.tie_embeddings and tok.bos_id == 256
    prompt, mask = tok.batch(["1 + 1 =", "12 + 12 ="], add_bos=True)
    out = generate.generate(
        params, config, prompt, mask, jax.random.key(0), max_new_tokens=3, stop_tokens=(257,)
    )
    assert out.tokens.shape == (2, 3)

    with pytest.raises(SystemExit) as exit_:  # the run folder holds a checkpoint
        cli.run_application("lm", ["--data", str(data), "--run-dir", str(run_dir), *TINY_FLAGS])
    assert exit_.value.code == 1 and "pass --resume" in capsys.readouterr().err
    (run_dir / loop.CHECKPOINT).unlink()  # without one, the model folder is still protected
    with pytest.raises(SystemExit) as exit_:
        cli.run_application("lm", ["--data", str(data), "--run-dir", str(run_dir), *TINY_FLAGS])
    assert exit_.value.code == 1 and "already holds a model" in capsys.readouterr().err

    again = cli.run_application(
        "lm",
        ["--data", str(data), "--run-dir", str(tmp_path / "more"), "--init-from",
         str(run_dir / "model"), "--seq-len", "24", "--batch-size", "4", "--steps", "2",
         "--valid-every", "2", "--valid-batches", "1", "--no-progress"],
    )  # fmt: skip
    assert again["steps"] == 2 and (tmp_path / "more" / "model" / "config.json").exists()
    assert again["parameters"] == summary["parameters"]


class Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_bitwise(data, tmp_path):
    """A run stopped after its step-2 checkpoint (an exception from a callback at step 3)
    resumes to the same model as an uninterrupted run."""

    def config(run_dir, **changes):
        return lm.Config(data=str(data), run_dir=str(run_dir), **{**TINY, "steps": 4, **changes})

    straight = lm.run(config(tmp_path / "straight", checkpoint_every=2), say=quiet)

    def interrupt(record):
        if record["step"] == 3:
            raise Interrupt

    split = tmp_path / "split"
    with pytest.raises(Interrupt):
        lm.run(config(split, checkpoint_every=2, log_every=1), callbacks=[interrupt], say=quiet)
    assert not (split / "model").exists() and (split / loop.CHECKPOINT).exists()
    resumed = lm.run(config(split, checkpoint_every=2, resume=True), say=quiet)
    assert resumed["steps"] == 4
    assert resumed["valid_bits_per_byte"] == straight["valid_bits_per_byte"]
    assert resumed["train_bits_per_byte"] == straight["train_bits_per_byte"]
    model = "model/model.safetensors"
    assert (split / model).read_bytes() == (tmp_path / "straight" / model).read_bytes()
    steps = [r["step"] for r in records(split) if "train_bits_per_byte" in r]
    assert steps == [1, 2, 3, 4]  # the interrupted step 3 is not duplicated
    # A finished run resumed again writes the same numbers and no new rows.
    lines = (split / loop.METRICS).read_text().splitlines()
    again = lm.run(config(split, checkpoint_every=2, resume=True), say=quiet)
    assert again["valid_bits_per_byte"] == straight["valid_bits_per_byte"]
    assert (split / loop.METRICS).read_text().splitlines() == lines
    # --steps shapes the learning-rate schedule: a longer run is a different run.
    with pytest.raises(CheckpointError, match="different configuration.*steps: saved 4, now 6"):
        lm.run(config(split, steps=6, resume=True), say=quiet)


def test_bad_flags_exit_2_with_a_message(capsys):
    for flags, message in (
        (["--kv-heads", "3"], "not a multiple of num_kv_heads=3"),
        (["--compute-dtype", "int4"], "--compute-dtype must be one of"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--steps", "0"], "--steps must be ≥ 1"),
    ):
        with pytest.raises(SystemExit) as exit_:
            cli.run_application("lm", flags)
        assert exit_.value.code == 2, flags
        assert message in capsys.readouterr().err, flags
