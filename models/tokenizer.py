"""Tokenizers for the LLM family: Hugging Face ``tokenizer.json`` files and a byte-level one.

Both kinds load through the ``tokenizers`` package (the ``llm`` extra), so a downloaded model
and a tiny model made here read their tokenizer the same way.

The byte-level tokenizer (:func:`byte_level`) is an ordinary ``tokenizer.json``: a BPE model
with no merges over the 256 byte symbols of the GPT-2 byte-to-unicode map, so token id ``b``
is byte ``b``, plus three special tokens ``<|bos|>`` (256), ``<|eos|>`` (257) and ``<|pad|>``
(258). UTF-8 text round-trips with ids exactly ``list(text.encode())``, except that a literal
special-token string in the text (``"<|eos|>"``) encodes to its special id, as in every Hugging
Face tokenizer; byte-level training data (:mod:`eggroll.models.lm_train`) skips the tokenizer.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eggroll.checkpoint import write_atomic

BYTE_BOS, BYTE_EOS, BYTE_PAD = 256, 257, 258
BYTE_SPECIALS = {"<|bos|>": BYTE_BOS, "<|eos|>": BYTE_EOS, "<|pad|>": BYTE_PAD}
BYTE_VOCAB_SIZE = 264  # 256 bytes + 3 specials, rounded up to a multiple of 8
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


def require(module: str) -> Any:
    """Import an ``llm``-extra package, or fail saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"eggroll's LLM models need the '{module.split('.')[0]}' package: "
            'pip install ".[llm]" (or pip install "eggroll[llm]")'
        ) from err


def _byte_symbols() -> list[str]:
    """The GPT-2 byte-to-unicode map: byte ``b`` → a printable character ``symbols[b]``.

    Printable Latin-1 bytes map to themselves; the other 68 bytes, in order, to ``chr(256 + n)``.
    """
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    shifted, symbols = 0, []
    for b in range(256):
        if b in keep:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


class Tokenizer:
    """A ``tokenizers.Tokenizer`` with the ids generation needs.

    ``bos_id``: prepended by ``encode(add_bos=True)`` (``None``: never). ``eos_ids``: stop
    tokens. ``pad_id``: fills left padding and the tail after a stop.
    """

    def __init__(
        self,
        backend: Any,
        *,
        bos_id: int | None = None,
        eos_ids: Sequence[int] = (),
        pad_id: int | None = None,
    ):
        self.backend = backend
        self.bos_id = bos_id
        self.eos_ids = tuple(eos_ids)
        self.pad_id = pad_id if pad_id is not None else (self.eos_ids[0] if self.eos_ids else 0)

    @property
    def vocab_size(self) -> int:
        """Ids the tokenizer knows (special tokens included)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of ``text`` (no special tokens added but ``bos_id`` when asked)."""
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if add_bos:
            if self.bos_id is None:
                raise ValueError("this tokenizer has no BOS token; call encode(add_bos=False)")
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (special tokens dropped by default)."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def batch(
        self, texts: Sequence[str], add_bos: bool = False, length: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded ``(ids (B, P) int32, mask (B, P) bool)`` for a batch of prompts.

        ``P`` is the longest prompt, or ``length`` (prompts longer than it keep their last
        ``length`` tokens). Left padding puts every prompt's last token in column ``P − 1``,
        where generation continues.
        """
        return left_pad([self.encode(t, add_bos) for t in texts], self.pad_id, length)

    def save(self, folder: str | os.PathLike) -> None:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``folder`` atomically."""
        folder = Path(folder)
        write_atomic(folder / TOKENIZER_FILE, self.backend.to_str().encode("utf-8"))
        names = {}
        for key, token_id in (("bos_token", self.bos_id), ("pad_token", self.pad_id)):
            if token_id is not None:
                names[key] = self.backend.id_to_token(token_id)
        if self.eos_ids:
            names["eos_token"] = self.backend.id_to_token(self.eos_ids[0])
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **names}
        write_atomic(folder / TOKENIZER_CONFIG_FILE, json.dumps(config, indent=2).encode())


def left_pad(
    sequences: Sequence[Sequence[int]], pad_id: int, length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (B, P) int32, mask (B, P) bool)``: each sequence right-aligned, padding first."""
    if not sequences:
        raise ValueError("left_pad needs at least one sequence")
    width = length if length is not None else max(len(s) for s in sequences)
    if width < 1:
        raise ValueError("every prompt is empty: give at least one token (e.g. add_bos=True)")
    ids = np.full((len(sequences), width), pad_id, np.int32)
    mask = np.zeros((len(sequences), width), bool)
    for row, seq in enumerate(sequences):
        seq = list(seq)[-width:]
        if seq:
            ids[row, width - len(seq) :] = seq
            mask[row, width - len(seq) :] = True
    return ids, mask


def byte_level() -> Tokenizer:
    """The byte-level tokenizer of the tiny models (see the module docstring)."""
    tokenizers = require("tokenizers")
    vocab = {symbol: b for b, symbol in enumerate(_byte_symbols())}
    model = tokenizers.models.BPE(vocab=vocab, merges=[])
    backend = tokenizers.Tokenizer(model)
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
        add_prefix_space=False, use_regex=False
    )
    backend.decoder = tokenizers.decoders.ByteLevel()
    specials = sorted(BYTE_SPECIALS.items(), key=lambda item: item[1])
    backend.add_special_tokens([tokenizers.AddedToken(name, special=True) for name, _ in specials])
    for name, token_id in specials:
        if backend.token_to_id(name) != token_id:
            raise RuntimeError(f"special token {name} got id {backend.token_to_id(name)}")
    return Tokenizer(backend, bos_id=BYTE_BOS, eos_ids=(BYTE_EOS,), pad_id=BYTE_PAD)


def load(
    folder: str | os.PathLike,
    *,
    bos_id: int | None = None,
    eos_ids: Sequence[int] = (),
    pad_id: int | None = None,
) -> Tokenizer:
    """Load ``folder/tokenizer.json``.

    Special ids given as arguments win; otherwise they come from ``tokenizer_config.json``'s
    ``bos_token``/``eos_token``/``pad_token`` names when present (the pad id falls back to the
    first EOS id, then 0). :func:`eggroll.models.hf.load` passes the ids of ``config.json``.
    """
    tokenizers = require("tokenizers")
    folder = Path(folder)
    path = folder / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no {TOKENIZER_FILE} in {folder}: download the model's tokenizer with it, or save "
            "one with eggroll.models.tokenizer.byte_level().save(folder)"
        )
    backend = tokenizers.Tokenizer.from_file(str(path))
    names: dict[str, Any] = {}
    config_path = folder / TOKENIZER_CONFIG_FILE
    if config_path.is_file():
        names = json.loads(config_path.read_text("utf-8"))

    def named(key: str) -> int | None:
        token = names.get(key)
        if isinstance(token, dict):  # {"content": "<|endoftext|>", ...}
            token = token.get("content")
        return backend.token_to_id(token) if isinstance(token, str) else None

    if bos_id is None:
        bos_id = named("bos_token")
    if not eos_ids and named("eos_token") is not None:
        eos_ids = (named("eos_token"),)
    if pad_id is None:
        pad_id = named("pad_token")
    return Tokenizer(backend, bos_id=bos_id, eos_ids=eos_ids, pad_id=pad_id)
