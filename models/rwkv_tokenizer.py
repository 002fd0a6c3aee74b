"""The RWKV "World" tokenizer: greedy longest match over a vocabulary of byte strings.

The vocabulary file (``rwkv_vocab_v20230424.txt``, 65,529 entries, shipped with the ``rwkv``
package under Apache-2.0) has one line per token: ``<id> <Python str or bytes literal>
<byte length>``. Text is encoded as UTF-8 bytes and cut, left to right, into the longest
vocabulary entry that matches at each position (every single byte is an entry, so any text
encodes). Id 0 is not in the vocabulary: it is the end-of-text token, used as the stop and pad
id. Literals are read with :func:`ast.literal_eval` (never ``eval``).

eggroll does not ship the vocabulary: the converter (:mod:`eggroll.models.rwkv_convert`) copies
it into the model folder (from ``--vocab`` or the installed ``rwkv`` package), and
:func:`load` reads it from there, or :meth:`WorldTokenizer.from_file` from any path.
"""

from __future__ import annotations

import ast
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eggroll.models.tokenizer import left_pad

VOCAB_FILE = "rwkv_vocab_v20230424.txt"
END_OF_TEXT = 0


def parse_vocab(text: str) -> dict[int, bytes]:
    """Id → token bytes of a vocabulary file's contents (``ValueError`` naming a bad line)."""
    tokens: dict[int, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            first, last = line.index(" "), line.rindex(" ")
            token_id, length = int(line[:first]), int(line[last:])
            token = ast.literal_eval(line[first:last].strip())
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"vocabulary line {number} is not '<id> <literal> <length>'") from err
        token = token.encode("utf-8") if isinstance(token, str) else token
        if not isinstance(token, bytes) or len(token) != length or token_id in tokens:
            raise ValueError(f"vocabulary line {number} is inconsistent: {line[:60]!r}")
        tokens[token_id] = token
    return tokens


class WorldTokenizer:
    """Encode/decode with a World vocabulary; the interface of
    :class:`eggroll.models.tokenizer.Tokenizer` (``encode``, ``decode``, ``batch``, ``bos_id``,
    ``eos_ids``, ``pad_id``, ``vocab_size``, ``save``)."""

    def __init__(
        self,
        tokens: dict[int, bytes],
        *,
        eos_ids: Sequence[int] = (END_OF_TEXT,),
        pad_id: int | None = END_OF_TEXT,
        source: Path | None = None,
    ):
        self.id_to_bytes = dict(tokens)
        self.bytes_to_id = {b: i for i, b in self.id_to_bytes.items()}
        if len(self.bytes_to_id) != len(self.id_to_bytes):
            raise ValueError("the vocabulary lists a byte string twice")
        # Every prefix of every token: the longest-match walk stops at the first non-prefix.
        self._prefixes = {t[:n] for t in self.bytes_to_id for n in range(1, len(t) + 1)}
        self.bos_id = None
        self.eos_ids = tuple(eos_ids)
        self.pad_id = pad_id
        self.source = source

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs) -> WorldTokenizer:
        path = Path(path)
        return cls(parse_vocab(path.read_text("utf-8")), source=path, **kwargs)

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (id 0, end of text, included)."""
        return max(self.id_to_bytes) + 1

    def encode_bytes(self, data: bytes) -> list[int]:
        ids, i, n = [], 0, len(data)
        prefixes, lookup = self._prefixes, self.bytes_to_id
        while i < n:
            best = 0
            j = i + 1
            while j <= n and data[i:j] in prefixes:
                if data[i:j] in lookup:
                    best = j
                j += 1
            if not best:
                raise ValueError(f"byte {data[i]:#04x} is not in the vocabulary")
            ids.append(lookup[data[i:best]])
            i = best
        return ids

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        if add_bos:
            raise ValueError("the World tokenizer has no BOS token; call encode(add_bos=False)")
        return self.encode_bytes(text.encode("utf-8"))

    def decode_bytes(self, ids: Sequence[int], skip_special_tokens: bool = True) -> bytes:
        out = []
        for i in ids:
            i = int(i)
            if i == END_OF_TEXT and i not in self.id_to_bytes:
                if skip_special_tokens:
                    continue
                raise ValueError("id 0 (end of text) has no text; decode(skip_special_tokens=True)")
            out.append(self.id_to_bytes[i])
        return b"".join(out)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; invalid UTF-8 (a multi-byte character cut) becomes U+FFFD."""
        return self.decode_bytes(ids, skip_special_tokens).decode("utf-8", errors="replace")

    def batch(
        self, texts: Sequence[str], add_bos: bool = False, length: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded ``(ids (B, P) int32, mask (B, P) bool)``."""
        return left_pad([self.encode(t, add_bos) for t in texts], self.pad_id or 0, length)

    def save(self, folder: str | os.PathLike) -> None:
        """Copy the vocabulary file into ``folder``."""
        if self.source is None:
            raise ValueError("this tokenizer was not read from a file")
        target = Path(folder) / VOCAB_FILE
        if self.source.resolve() != target.resolve():
            shutil.copyfile(self.source, target)


def package_vocab() -> Path | None:
    """The vocabulary file of the installed ``rwkv`` package, without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("rwkv")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / VOCAB_FILE
    return path if path.is_file() else None


def load(
    folder: str | os.PathLike,
    *,
    eos_ids: Sequence[int] = (END_OF_TEXT,),
    pad_id: int | None = END_OF_TEXT,
) -> WorldTokenizer:
    """The tokenizer of a model folder (``folder/rwkv_vocab_v20230424.txt``)."""
    path = Path(folder) / VOCAB_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no {VOCAB_FILE} in {folder}: copy the World vocabulary there (pip install rwkv "
            "ships it), or convert with scripts/convert_rwkv7.py --vocab PATH"
        )
    return WorldTokenizer.from_file(path, eos_ids=eos_ids, pad_id=pad_id)
