"""Shared by the application tests: tiny corpora, run-folder readers, subprocess settings."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np

import eggroll as egg
from eggroll.train import loop
from eggroll.train.config import flag
from tests.xla import xla_flags

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
WORDS = [b"alpha ", b"beta ", b"gamma ", b"delta\n", b"(x) ", b"= 1; "]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_corpus(root: Path, files: int = 12, words: int = 400, seed: int = 0) -> Path:
    """A folder of ``files`` small text files of an easy word language (a hashed split puts
    some of them in validation)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(files):
        text = b"".join(WORDS[j] for j in rng.integers(0, len(WORDS), words))
        (root / f"doc{i:02d}.txt").write_bytes(text)
    return root


def records(run_dir: Path) -> list[dict[str, Any]]:
    return loop.read_jsonl(Path(run_dir) / loop.METRICS)


def train_rows(run_dir: Path, key: str) -> list[dict[str, Any]]:
    """The per-generation rows of a run (those that carry ``key``; evaluation rows do not)."""
    return [r for r in records(run_dir) if key in r]


def final_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in records(run_dir) if r.get("final")]


def leaves(run_dir: Path, only: str = "") -> dict[str, bytes]:
    """The raw bytes of a run's checkpointed leaves (paths containing ``only``), without the
    metadata (timings differ between runs)."""
    doc = egg.checkpoint.read(Path(run_dir) / loop.CHECKPOINT)
    return {leaf["path"]: leaf["data"] for leaf in doc["leaves"] if only in leaf["path"]}


def metadata(run_dir: Path) -> dict[str, Any]:
    return egg.checkpoint.read(Path(run_dir) / loop.CHECKPOINT)["metadata"]


def cli_flags(settings: dict[str, Any]) -> list[str]:
    """The command line that gives the config ``settings``: ``--name value`` per entry, and
    ``--name`` or ``--no-name`` for a boolean."""
    argv = []
    for name, value in settings.items():
        if isinstance(value, bool):
            argv.append(flag(name) if value else f"--no-{flag(name)[2:]}")
        else:
            argv += [flag(name), str(value)]
    return argv


def subprocess_env(cache: Path) -> dict[str, str]:
    """The environment of a command run as a subprocess: CPU, one device, a private cache."""
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        EGGROLL_CACHE=str(cache),
        XLA_FLAGS=xla_flags(devices=1),
    )


def command(kind: str, application: str) -> list[str]:
    """How a subprocess starts an application: ``module`` (``python -m eggroll.train.cli
    APP``) or ``script`` (``python scripts/<script>.py``)."""
    if kind == "module":
        return [sys.executable, "-m", "eggroll.train.cli", application]
    script = {"pretrain": "es_pretrain", "rl": "rl_train", "finetune": "llm_finetune"}
    return [sys.executable, str(SCRIPTS / f"{script[application]}.py")]
