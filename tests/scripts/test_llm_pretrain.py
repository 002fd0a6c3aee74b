"""scripts/llm_pretrain.py end to end at tiny size: a loadable HF folder that generates."""

import json

import jax
import numpy as np
import pytest

from eggroll.models import generate, hf
from tests.scripts.helpers import load_script

llm_pretrain = load_script("llm_pretrain")

TINY = [
    "--hidden", "32", "--layers", "1", "--intermediate", "48", "--seq-len", "24",
    "--batch-size", "4", "--steps", "6", "--valid-every", "3", "--valid-batches", "2",
    "--log-every", "2", "--no-progress",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EGGROLL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_pretrain_writes_a_model_folder_that_loads_and_generates(tmp_path, capsys):
    data = tmp_path / "corpus.txt"
    data.write_bytes(b"".join(b"%d + %d = %d\n" % (i, i, 2 * i) for i in range(2000)))
    run_dir = tmp_path / "run"
    summary = llm_pretrain.main(["--data", str(data), "--run-dir", str(run_dir), *TINY])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(
        (run_dir / "summary.json").read_text()
    )
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "valid_bits_per_byte" in r] == [3, 6]
    assert [r["step"] for r in records if "train_bits_per_byte" in r] == [2, 4, 6]
    assert summary["valid_bits_per_byte"] < np.log2(264)  # below a uniform guess already

    params, config = hf.load(run_dir / "model")
    tok = hf.load_tokenizer(run_dir / "model", config)
    assert config.hidden_size == 32 and config.tie_embeddings and tok.bos_id == 256
    prompt, mask = tok.batch(["1 + 1 =", "12 + 12 ="], add_bos=True)
    out = generate.generate(
        params, config, prompt, mask, jax.random.key(0), max_new_tokens=3, stop_tokens=(257,)
    )
    assert out.tokens.shape == (2, 3)

    with pytest.raises(SystemExit, match="already holds a model"):
        llm_pretrain.main(["--data", str(data), "--run-dir", str(run_dir), *TINY])
    again = llm_pretrain.main(
        ["--data", str(data), "--run-dir", str(tmp_path / "more"), "--init-from",
         str(run_dir / "model"), *TINY[:-9], "--steps", "2", "--valid-every", "2",
         "--valid-batches", "1", "--no-progress"]
    )  # fmt: skip
    assert again["steps"] == 2 and (tmp_path / "more" / "model" / "config.json").exists()


def test_bad_flags_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        llm_pretrain.main(["--kv-heads", "3"])
    assert "not a multiple of num_kv_heads=3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        llm_pretrain.main(["--compute-dtype", "int4"])
    assert "--compute-dtype must be one of" in capsys.readouterr().err
