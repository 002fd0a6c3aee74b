"""Shared by the LLM tests: the parity fixtures (tiny random Hugging Face checkpoints made by
scripts/make_llm_fixture.py) loaded once per test session."""

import functools
from pathlib import Path

import numpy as np

from eggroll.models import hf

FIXTURES = Path(__file__).resolve().parent / "fixtures"
VARIANTS = ("qwen2", "llama", "mistral")


@functools.cache
def load(name: str):
    """``(params, config, input_ids, attention_mask, expected_logits)`` of a fixture."""
    folder = FIXTURES / name
    params, config = hf.load(folder)
    ids = np.load(folder / "input_ids.npy")
    mask = np.load(folder / "attention_mask.npy")
    logits = np.load(folder / "logits.npy")
    return params, config, ids, mask, logits
