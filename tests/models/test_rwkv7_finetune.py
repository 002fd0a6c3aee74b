"""Fine-tuning an RWKV-7 folder: ``--model <rwkv7 folder>`` runs EGGROLL generations end to end
and the GRPO baseline's backprop step (a tiny random model with a byte vocabulary in the World
file format)."""

import jax
import numpy as np
import pytest

from eggroll.models import rwkv7, rwkv_tokenizer
from eggroll.train import finetune

TINY = dict(
    digits=1, prompts=2, group=2, eval_problems=4, eval_every=1, checkpoint_every=1,
    seconds=0, sigma=0.01, lr=0.001, max_new_tokens=3, progress=False, generations=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def rwkv_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rwkv7")
    config = rwkv7.RWKV7Config(
        vocab_size=264, hidden_size=32, num_layers=1, head_size=16, intermediate_size=64,
        decay_lora=8, a_lora=8, v_lora=8, gate_lora=8,
    )  # fmt: skip
    rwkv7.save(folder, rwkv7.init_params(jax.random.key(0), config), config)
    lines = [f"{b + 1} {bytes([b])!r} 1" for b in range(256)]
    (folder / rwkv_tokenizer.VOCAB_FILE).write_text("\n".join(lines) + "\n", "utf-8")
    return folder


def test_finetune_runs_on_an_rwkv7_folder(rwkv_folder, tmp_path):
    summary = finetune.run(
        finetune.Config(**TINY, model=str(rwkv_folder), run_dir=str(tmp_path / "run")),
        say=lambda *_: None,
    )
    assert summary["generations"] == 1 and 0.0 <= summary["final_accuracy"] <= 1.0


def _spread(problem, text):
    """A reward that tells sampled answers apart (the random model is never correct, and equal
    rewards in a group give GRPO zero advantages)."""
    return float(sum(text.encode()) % 7)


def test_grpo_step_on_an_rwkv7_folder_moves_the_matrices(rwkv_folder, tmp_path):
    cfg = finetune.Config(
        **{**TINY, "lr": 0.01}, method="grpo", reward=_spread, model=str(rwkv_folder),
        run_dir=str(tmp_path),
    )  # fmt: skip
    trainer = finetune.Trainer(cfg, say=lambda *_: None)
    before = trainer.params
    record, _ = trainer.step(1)
    assert np.isfinite(record["loss"]) and record["grad_norm"] > 0
    after = trainer.params
    assert float(np.max(np.abs(after["layers"]["key"] - before["layers"]["key"]))) > 0
    np.testing.assert_array_equal(after["layers"]["x_r"], before["layers"]["x_r"])  # frozen
