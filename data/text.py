"""Byte corpora for a byte-level (vocabulary 256) language model.

Three pieces:

* :func:`load_corpus` turns a ``--data`` spec (``"stdlib"``, a file, a folder, ``"hf:NAME"``)
  into a :class:`Corpus`: two flat ``uint8`` arrays (train and validation) plus the offsets
  where documents begin. The bytes are written once to a cache folder and memory-mapped
  afterwards, so a second load reads no source file.
* :func:`baselines` gives reference bits per byte (unigram, bigram, lzma) on the validation
  split, for judging a learned model.
* :class:`TextStreams` and :func:`validation_batches` cut the bytes into ``(tokens, resets)``
  batches for a recurrent model whose hidden state is carried from one batch to the next.

Documents are the unit of the train/validation split: a document goes to validation when a
hash of its name (relative path) falls below ``valid_fraction``, so the split is stable when
files are added or removed. Where that leaves a split empty (a single file, or a folder with
very few files) the documents are instead cut at one byte offset: everything before the last
``valid_fraction`` of the bytes is train and the rest is validation (the document straddling
the cut becomes two documents).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import lzma
import os
import sys
import sysconfig
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eggroll.checkpoint import write_atomic_with

FORMAT_VERSION = 1
"""Bumped whenever the cache layout or the split rule changes; it is part of every cache key."""

LZMA_MAX_BYTES = 8 * 2**20
""":func:`baselines` compresses at most this many leading validation bytes with lzma."""

_EXCLUDED_STDLIB_DIRS = frozenset({"site-packages", "dist-packages"})
_HASH_BUCKETS = 10_000
_DATA_HELP = (
    "--data accepts 'stdlib' (the default: this Python's standard library source), "
    "a text file, a folder of text files, or 'hf:NAME' for a Hugging Face dataset"
)


@dataclass(frozen=True, eq=False)
class Corpus:
    """A byte corpus split into train and validation.

    ``train`` and ``valid`` are 1-D ``uint8`` arrays (memory-mapped from the cache); each is
    the concatenation of its documents. ``train_doc_starts`` / ``valid_doc_starts`` are sorted
    ``int64`` byte offsets where the documents begin; the first is always 0.
    """

    name: str
    train: np.ndarray
    valid: np.ndarray
    train_doc_starts: np.ndarray
    valid_doc_starts: np.ndarray

    @property
    def num_train_docs(self) -> int:
        """Number of documents in the train split."""
        return int(self.train_doc_starts.shape[0])

    @property
    def num_valid_docs(self) -> int:
        """Number of documents in the validation split."""
        return int(self.valid_doc_starts.shape[0])


# --------------------------------------------------------------------------------------------
# Sources: where the documents come from
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """A resolved ``--data`` spec: a cache identity and a way to produce its documents.

    ``build`` returns ``(train_docs, valid_docs)``, two iterables of ``bytes`` documents.
    """

    name: str
    identity: dict
    build: Callable[[], tuple[Iterable[bytes], Iterable[bytes]]]


def _in_valid(key: str, valid_fraction: float) -> bool:
    """Whether the document named ``key`` belongs to the validation split (crc32 bucket)."""
    bucket = zlib.crc32(key.encode("utf-8")) % _HASH_BUCKETS
    return bucket < valid_fraction * _HASH_BUCKETS


def _stdlib_files() -> tuple[Path, list[str]]:
    """The stdlib root and the sorted posix relative paths of its ``*.py`` files.

    Anything under ``site-packages`` or ``dist-packages`` is left out, so the corpus does not
    depend on what is pip-installed. Symlinked folders are not followed.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    rels = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _EXCLUDED_STDLIB_DIRS]
        for fname in filenames:
            if fname.endswith(".py") and os.path.isfile(os.path.join(dirpath, fname)):
                rels.append(Path(dirpath, fname).relative_to(root).as_posix())
    return root, sorted(rels)


def _folder_files(root: Path) -> list[str]:
    """Sorted posix relative paths of the regular files under ``root``, hidden ones skipped.

    A file or folder is hidden when its name starts with ``"."``. Symlinked folders are not
    followed.
    """
    rels = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fname in filenames:
            full = os.path.join(dirpath, fname)
            if not fname.startswith(".") and os.path.isfile(full):
                rels.append(Path(full).relative_to(root).as_posix())
    return sorted(rels)


def _manifest(root: Path, rels: list[str]) -> list[tuple[str, int, int]]:
    """``(relpath, size in bytes, mtime in ns)`` of each file, for the cache key."""
    out = []
    for rel in rels:
        st = (root / rel).stat()
        out.append((rel, st.st_size, st.st_mtime_ns))
    return out


def _split_files(
    root: Path, manifest: list[tuple[str, int, int]], valid_fraction: float
) -> tuple[Iterable[bytes], Iterable[bytes]]:
    """Split files (one document each, empty files skipped) by path hash, or by byte offset.

    The hash split is used when it gives both splits at least one byte; otherwise all
    documents are concatenated in order and cut at the last ``valid_fraction`` of the bytes
    (see the module docstring).
    """
    nonempty = [(rel, size) for rel, size, _ in manifest if size > 0]
    valid_rels = {rel for rel, _ in nonempty if _in_valid(rel, valid_fraction)}
    n_valid = sum(size for rel, size in nonempty if rel in valid_rels)
    n_total = sum(size for _, size in nonempty)
    read = lambda rel: (root / rel).read_bytes()
    if 0 < n_valid < n_total:
        train = (read(rel) for rel, _ in nonempty if rel not in valid_rels)
        valid = (read(rel) for rel, _ in nonempty if rel in valid_rels)
        return train, valid
    return _cut_at_tail([read(rel) for rel, _ in nonempty], valid_fraction)


def _cut_at_tail(docs: list[bytes], valid_fraction: float) -> tuple[list[bytes], list[bytes]]:
    """Cut the concatenated ``docs`` so that the last ``valid_fraction`` of bytes is valid.

    The validation part has ``max(1, round(total * valid_fraction))`` bytes and train keeps at
    least one byte; a document straddling the cut becomes a train head and a valid tail.
    """
    total = sum(len(d) for d in docs)
    if total < 2:
        raise ValueError(
            f"The corpus has {total} byte(s); at least 2 are needed to give both the train and "
            "the validation split one byte. Point --data at more text."
        )
    n_valid = min(total - 1, max(1, round(total * valid_fraction)))
    cut = total - n_valid
    train: list[bytes] = []
    valid: list[bytes] = []
    offset = 0
    for doc in docs:
        head = doc[: max(0, cut - offset)]
        tail = doc[len(head) :]
        if head:
            train.append(head)
        if tail:
            valid.append(tail)
        offset += len(doc)
    return train, valid


def _stdlib_source(valid_fraction: float) -> _Source:
    """The embedded default corpus: this Python's standard library ``*.py`` files."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"

    def build() -> tuple[Iterable[bytes], Iterable[bytes]]:
        root, rels = _stdlib_files()
        return _split_files(root, _manifest(root, rels), valid_fraction)

    identity = {
        "kind": "stdlib",
        "python": version,
        "implementation": sys.implementation.name,
        "stdlib": sysconfig.get_paths()["stdlib"],
    }
    return _Source(f"stdlib-py{version}", identity, build)


def _path_source(path: Path, valid_fraction: float) -> _Source:
    """A single file (one document, cut at a byte offset) or a folder (one document a file)."""
    path = path.resolve()
    if path.is_dir():
        rels = _folder_files(path)
        if not rels:
            raise ValueError(
                f"The folder {str(path)!r} holds no (non-hidden) files; put text files in it or "
                f"choose another corpus ({_DATA_HELP})."
            )
        manifest = _manifest(path, rels)
        build = lambda: _split_files(path, manifest, valid_fraction)
        return _Source(path.name, {"kind": "folder", "path": str(path), "files": manifest}, build)
    st = path.stat()
    if st.st_size == 0:
        raise ValueError(f"The file {str(path)!r} is empty; point --data at a file with text.")
    manifest = [(path.name, st.st_size, st.st_mtime_ns)]
    build = lambda: _cut_at_tail([path.read_bytes()], valid_fraction)
    return _Source(path.name, {"kind": "file", "path": str(path), "files": manifest}, build)


def _hf_rows(dataset: Iterable[dict], column: str) -> Iterator[bytes]:
    """The non-empty ``column`` strings of ``dataset``, utf-8 encoded (bad characters replaced)."""
    for row in dataset:
        text = row[column]
        if text:
            yield text.encode("utf-8", errors="replace")


def _hf_source(name: str, valid_fraction: float) -> _Source:
    """A Hugging Face dataset: the ``text`` column, one row a document.

    Its ``train`` and ``validation`` splits are used when both exist; otherwise the rows of
    ``train`` are split by a hash of their row index. ``datasets`` is only imported when the
    cache has no entry for this dataset yet.
    """

    def build() -> tuple[Iterable[bytes], Iterable[bytes]]:
        if importlib.util.find_spec("datasets") is None:
            raise ImportError(
                f"--data hf:{name} needs the Hugging Face 'datasets' package: `pip install "
                "datasets` (the first load downloads the dataset, so it also needs network "
                "access)."
            )
        from datasets import load_dataset

        splits = load_dataset(name)
        if "train" not in splits:
            raise ValueError(f"The dataset {name!r} has no 'train' split: {list(splits)}.")
        if "validation" in splits:
            return _hf_rows(splits["train"], "text"), _hf_rows(splits["validation"], "text")
        rows = splits["train"]
        is_valid = [_in_valid(str(i), valid_fraction) for i in range(len(rows))]
        train = _hf_rows((r for r, v in zip(rows, is_valid, strict=True) if not v), "text")
        valid = _hf_rows((r for r, v in zip(rows, is_valid, strict=True) if v), "text")
        return train, valid

    identity = {"kind": "hf", "name": name}
    return _Source(f"hf:{name}", identity, build)


def _resolve(spec: str | None, valid_fraction: float) -> _Source:
    """Turn a ``--data`` spec into a :class:`_Source` (see :func:`load_corpus`)."""
    if spec is None or spec == "stdlib":
        return _stdlib_source(valid_fraction)
    if spec.startswith("hf:"):
        name = spec[3:]
        if not name:
            raise ValueError(f"{spec!r} names no dataset; write e.g. 'hf:JeanKaddour/minipile'.")
        return _hf_source(name, valid_fraction)
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"No corpus at {str(path)!r}: no such file or folder. {_DATA_HELP}."
        )
    return _path_source(path, valid_fraction)


# --------------------------------------------------------------------------------------------
# Cache: raw uint8 files plus a JSON index, written atomically, memory-mapped on load
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$EGGROLL_CACHE`` if set, else ``~/.cache/eggroll/corpora``."""
    env = os.environ.get("EGGROLL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "eggroll" / "corpora"


def _cache_key(source: _Source, valid_fraction: float) -> str:
    """A hex digest of everything the cached bytes depend on."""
    blob = json.dumps(
        {"format": FORMAT_VERSION, "valid_fraction": valid_fraction, **source.identity},
        sort_keys=True,
    )
    return hashlib.blake2b(blob.encode("utf-8"), digest_size=16).hexdigest()


def _atomic_write(path: Path, write: Callable[[object], None]) -> None:
    """Call ``write(file)`` on a temp file next to ``path``, then move it onto ``path``
    (:func:`eggroll.checkpoint.write_atomic_with`: fsync, the permissions of a plain
    ``open(path, "w")``, stale temp files of killed writes removed)."""
    write_atomic_with(path, write)


def _write_docs(path: Path, docs: Iterable[bytes]) -> list[int]:
    """Concatenate ``docs`` into ``path`` (atomically); return each document's start offset."""
    starts: list[int] = []

    def write(f) -> None:
        offset = 0
        for doc in docs:
            if doc:
                starts.append(offset)
                f.write(doc)
                offset += len(doc)

    _atomic_write(path, write)
    return starts


def _paths(cache_dir: Path, key: str) -> tuple[Path, Path, Path]:
    """The train bytes, valid bytes and JSON index files of one cache entry."""
    return cache_dir / f"{key}.train.u8", cache_dir / f"{key}.valid.u8", cache_dir / f"{key}.json"


def _build(source: _Source, cache_dir: Path, key: str) -> None:
    """Read the source once and write its cache entry; the index is written last."""
    train_path, valid_path, index_path = _paths(cache_dir, key)
    train_docs, valid_docs = source.build()
    train_starts = _write_docs(train_path, train_docs)
    valid_starts = _write_docs(valid_path, valid_docs)
    sizes = {"train": train_path.stat().st_size, "valid": valid_path.stat().st_size}
    for split, starts in (("train", train_starts), ("valid", valid_starts)):
        if not starts:
            train_path.unlink(missing_ok=True)
            valid_path.unlink(missing_ok=True)
            raise ValueError(
                f"The corpus {source.name!r} has an empty {split} split; give it more "
                f"documents or, for a Hugging Face dataset, a non-empty '{split}' split."
            )
    index = {
        "format": FORMAT_VERSION,
        "name": source.name,
        "identity": source.identity,
        "train": {"bytes": sizes["train"], "doc_starts": train_starts},
        "valid": {"bytes": sizes["valid"], "doc_starts": valid_starts},
    }
    _atomic_write(index_path, lambda f: f.write(json.dumps(index).encode("utf-8")))


def _open_cached(cache_dir: Path, key: str) -> Corpus | None:
    """The cached corpus under ``key``, or ``None`` when missing or incomplete."""
    train_path, valid_path, index_path = _paths(cache_dir, key)
    try:
        index = json.loads(index_path.read_text("utf-8"))
        arrays = {}
        for split, path in (("train", train_path), ("valid", valid_path)):
            if path.stat().st_size != index[split]["bytes"]:
                return None
            arrays[split] = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError, KeyError):
        return None
    return Corpus(
        name=index["name"],
        train=arrays["train"],
        valid=arrays["valid"],
        train_doc_starts=np.asarray(index["train"]["doc_starts"], dtype=np.int64),
        valid_doc_starts=np.asarray(index["valid"]["doc_starts"], dtype=np.int64),
    )


def load_corpus(
    spec: str | None = None,
    *,
    valid_fraction: float = 0.05,
    cache_dir: str | os.PathLike | None = None,
) -> Corpus:
    """Load a byte corpus, building its cache entry on the first call.

    ``spec``:

    * ``None`` or ``"stdlib"``: every ``*.py`` file of this Python's standard library
      (``sysconfig.get_paths()["stdlib"]``, ``site-packages``/``dist-packages`` excluded), one
      document a file, split by a crc32 hash of the relative path.
    * a folder: every non-hidden regular file below it, one document a file, split the same way.
    * a file: one document; the last ``valid_fraction`` of its bytes is the validation split.
    * ``"hf:NAME"``: the ``text`` column of a Hugging Face dataset (needs ``datasets``).

    A hash split that leaves train or validation empty falls back to the byte-offset cut of the
    single-file case (see the module docstring). ``valid_fraction`` is in ``(0, 1)``.

    The bytes of each split are cached as raw ``uint8`` files in ``cache_dir`` (default
    :func:`default_cache_dir`) under a key covering the spec, ``valid_fraction``, the format
    version and, for files and folders, each file's ``(relpath, size, mtime_ns)``. The returned
    arrays are read-only memmaps of those files.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction!r}.")
    source = _resolve(spec, valid_fraction)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    key = _cache_key(source, valid_fraction)
    corpus = _open_cached(cache, key)
    if corpus is None:
        _build(source, cache, key)
        corpus = _open_cached(cache, key)
        if corpus is None:
            raise RuntimeError(f"Wrote the cache entry {key} in {str(cache)!r} but cannot read it.")
    return corpus


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------


def _unigram_probs(data: np.ndarray) -> np.ndarray:
    """Add-one smoothed byte frequencies of ``data``: shape ``(256,)``, sums to 1."""
    counts = np.bincount(data, minlength=256).astype(np.float64)
    return (counts + 1.0) / (counts.sum() + 256.0)


def _pair_counts(data: np.ndarray, doc_starts: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
    """Counts of byte pairs ``(a, b)`` inside documents: shape ``(256, 256)``, int64.

    A pair whose second byte starts a document is not counted. Works in chunks of ``chunk``
    bytes to bound memory.
    """
    counts = np.zeros(256 * 256, dtype=np.int64)
    for lo in range(0, max(0, len(data) - 1), chunk):
        hi = min(lo + chunk, len(data) - 1)
        a = np.asarray(data[lo:hi], dtype=np.intp)
        b = np.asarray(data[lo + 1 : hi + 1], dtype=np.intp)
        counts += np.bincount(a * 256 + b, minlength=256 * 256)
    # Remove the pairs that cross into a document (starts at offset >= 1).
    crossing = doc_starts[doc_starts >= 1]
    bad = data[crossing - 1].astype(np.intp) * 256 + data[crossing].astype(np.intp)
    counts -= np.bincount(bad, minlength=256 * 256)
    return counts.reshape(256, 256)


def _bigram_log2_probs(train: np.ndarray, train_starts: np.ndarray, beta: float) -> np.ndarray:
    """``log2 P(b | a)`` with Dirichlet smoothing towards the unigram: shape ``(256, 256)``."""
    pairs = _pair_counts(train, train_starts).astype(np.float64)
    prior = _unigram_probs(train)
    probs = (pairs + beta * prior[None, :]) / (pairs.sum(axis=1, keepdims=True) + beta)
    return np.log2(probs)


def baselines(corpus: Corpus) -> dict[str, float]:
    """Bits per byte of simple models on the validation split, each fitted on train only.

    * ``"unigram"``: byte frequencies of train with add-one smoothing over 256 symbols.
    * ``"bigram"``: ``P(b | a) = (count(a, b) + beta * P_unigram(b)) / (count(a) + beta)``
      with ``beta = 1`` (Dirichlet smoothing towards the unigram above). Pairs are counted
      within documents only, ``count(a)`` is the number of pairs with first byte ``a``, and
      the first byte of each validation document is scored by the unigram (as a recurrent
      model resets its state there).
    * ``"lzma"``: ``lzma`` at preset ``9 | PRESET_EXTREME``, compressed size in bits over the
      bytes compressed. Only the first :data:`LZMA_MAX_BYTES` (8 MiB) of validation are
      compressed, to keep this fast. This is an upper bound on what a byte-level model could
      reach, not a model fitted on train.
    """
    train, valid = corpus.train, corpus.valid
    n_valid = len(valid)
    unigram = _unigram_probs(train)
    valid_counts = np.bincount(valid, minlength=256)
    unigram_bits = -float(valid_counts @ np.log2(unigram)) / n_valid

    bigram_log2 = _bigram_log2_probs(train, corpus.train_doc_starts, beta=1.0)
    valid_pairs = _pair_counts(valid, corpus.valid_doc_starts)
    first_bytes = np.bincount(valid[corpus.valid_doc_starts], minlength=256)
    bigram_total = float((valid_pairs * bigram_log2).sum() + first_bytes @ np.log2(unigram))
    bigram_bits = -bigram_total / n_valid

    head = np.asarray(valid[:LZMA_MAX_BYTES]).tobytes()
    lzma_bits = len(lzma.compress(head, preset=9 | lzma.PRESET_EXTREME)) * 8 / len(head)
    return {"unigram": unigram_bits, "bigram": bigram_bits, "lzma": lzma_bits}


# --------------------------------------------------------------------------------------------
# Batches for a recurrent model
# --------------------------------------------------------------------------------------------


def _check_data(data: np.ndarray, doc_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a flat ``uint8`` byte array and its document starts; return them as arrays."""
    if not isinstance(data, np.ndarray):
        data = np.asarray(data)
    if data.ndim != 1 or data.dtype != np.uint8:
        raise ValueError(
            f"data must be a 1-D uint8 array of bytes, got shape {data.shape} dtype {data.dtype}."
        )
    if data.shape[0] == 0:
        raise ValueError("data is empty; load a corpus with at least one byte.")
    starts = np.asarray(doc_starts, dtype=np.int64)
    if starts.ndim != 1 or starts.shape[0] == 0 or starts[0] != 0:
        raise ValueError("doc_starts must be a non-empty 1-D array whose first entry is 0.")
    if np.any(np.diff(starts) <= 0) or starts[-1] >= data.shape[0]:
        raise ValueError(
            f"doc_starts must be strictly increasing offsets below len(data)={data.shape[0]}."
        )
    return data, starts


def _check_shape(num_streams: int, seq_len: int) -> None:
    """Validate the batch shape arguments."""
    if num_streams < 1:
        raise ValueError(f"num_streams must be >= 1, got {num_streams}.")
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}.")


def _start_bits(doc_starts: np.ndarray, n: int) -> np.ndarray:
    """A packed bit lookup (``ceil(n / 8)`` bytes, big-endian bits) marking document starts."""
    bits = np.zeros((n + 7) // 8, dtype=np.uint8)
    np.bitwise_or.at(bits, doc_starts >> 3, (0x80 >> (doc_starts & 7)).astype(np.uint8))
    return bits


def _is_start(bits: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Whether each offset in ``idx`` (int64, any shape) starts a document: bool, same shape."""
    return ((bits[idx >> 3] >> (7 - (idx & 7)).astype(np.uint8)) & 1).astype(bool)


class TextStreams:
    """``num_streams`` contiguous byte streams over ``data``, advanced ``seq_len`` per batch.

    Each stream starts at an offset drawn uniformly over the bytes by
    ``np.random.default_rng(seed)``, moved back to the start of its document. A stream that
    reaches the end of ``data`` wraps to offset 0 (the first document's start); ``data`` is
    treated as a ring, and the wrap point counts as a document start.

    ``data`` is a 1-D ``uint8`` array; ``doc_starts`` the sorted ``int64`` offsets where its
    documents begin (first is 0). Document starts are kept as a packed bit lookup of
    ``len(data) / 8`` bytes.
    """

    def __init__(
        self,
        data: np.ndarray,
        doc_starts: np.ndarray,
        num_streams: int,
        seq_len: int,
        seed: int = 0,
    ) -> None:
        data, starts = _check_data(data, doc_starts)
        _check_shape(num_streams, seq_len)
        if seq_len + 1 > data.shape[0]:
            raise ValueError(
                f"seq_len + 1 = {seq_len + 1} exceeds the {data.shape[0]} bytes of data; "
                "use a shorter seq_len or more data."
            )
        self._data = data
        self._bits = _start_bits(starts, data.shape[0])
        self._offsets = np.arange(seq_len + 1, dtype=np.int64)
        self.num_streams = num_streams
        self.seq_len = seq_len
        drawn = np.random.default_rng(seed).integers(0, data.shape[0], size=num_streams)
        self._positions = starts[np.searchsorted(starts, drawn, side="right") - 1]

    @property
    def positions(self) -> np.ndarray:
        """The offset of each stream's next input byte: int64, shape ``(num_streams,)``."""
        return self._positions.copy()

    def next_batch(self, rows: slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The next ``(tokens, resets)`` and advance every stream by ``seq_len``.

        ``tokens``: uint8 ``(num_streams, seq_len + 1)``; inputs are ``tokens[:, :-1]`` and
        targets ``tokens[:, 1:]``, and the last column is the first column of the next batch.
        ``resets``: bool ``(num_streams, seq_len)``, True where input ``t`` starts a document.
        ``rows`` reads only those streams (a process's share in a multi-process run); every
        stream still advances, so all processes stay in step.
        """
        positions = self._positions if rows is None else self._positions[rows]
        idx = (positions[:, None] + self._offsets[None, :]) % self._data.shape[0]
        tokens = np.asarray(self._data[idx], dtype=np.uint8)
        resets = _is_start(self._bits, idx[:, :-1])
        self._positions = (self._positions + self.seq_len) % self._data.shape[0]
        return tokens, resets

    def state_dict(self) -> dict:
        """A JSON-able snapshot from which :meth:`load_state_dict` resumes exactly."""
        return {
            "positions": [int(p) for p in self._positions],
            "num_streams": self.num_streams,
            "seq_len": self.seq_len,
            "data_len": int(self._data.shape[0]),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the stream positions saved by :meth:`state_dict`."""
        if int(state["data_len"]) != self._data.shape[0]:
            raise ValueError(
                f"The state was saved for {state['data_len']} bytes of data but these streams "
                f"have {self._data.shape[0]}; load it with the same corpus and split."
            )
        positions = np.asarray(state["positions"], dtype=np.int64)
        if positions.shape != (self.num_streams,):
            raise ValueError(
                f"The state holds {positions.shape} positions but num_streams is "
                f"{self.num_streams}; build TextStreams with the saved num_streams."
            )
        if np.any(positions < 0) or np.any(positions >= self._data.shape[0]):
            raise ValueError("The state holds positions outside [0, len(data)).")
        self._positions = positions


def validation_batches(
    data: np.ndarray,
    doc_starts: np.ndarray,
    num_streams: int,
    seq_len: int,
    max_bytes: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Deterministic ``(tokens, resets)`` batches over the first ``max_bytes`` bytes of data.

    Those bytes (all of ``data`` when ``max_bytes`` is None) are cut into ``num_streams``
    contiguous slices of ``L = n // num_streams`` bytes (the remainder is dropped). Each slice
    is scanned in order, ``seq_len`` inputs per batch, with the same layout as
    :meth:`TextStreams.next_batch`; the first byte of each slice counts as a reset. There are
    ``(L - 1) // seq_len`` batches: the last partial chunk of every slice is dropped, so
    ``num_streams * seq_len * ((L - 1) // seq_len)`` targets are scored in all.

    The arguments are checked on the call, not on the first ``next``.
    """
    data, starts = _check_data(data, doc_starts)
    _check_shape(num_streams, seq_len)
    n = data.shape[0] if max_bytes is None else min(int(max_bytes), data.shape[0])
    slice_len = n // num_streams
    if slice_len < seq_len + 1:
        raise ValueError(
            f"{n} bytes in {num_streams} slices give {slice_len} bytes a slice, fewer than "
            f"seq_len + 1 = {seq_len + 1}; use fewer streams, a shorter seq_len or more bytes."
        )
    bits = _start_bits(starts, data.shape[0])
    slice_starts = np.arange(num_streams, dtype=np.int64) * slice_len
    offsets = np.arange(seq_len + 1, dtype=np.int64)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for k in range((slice_len - 1) // seq_len):
            idx = slice_starts[:, None] + k * seq_len + offsets[None, :]
            tokens = np.asarray(data[idx], dtype=np.uint8)
            resets = _is_start(bits, idx[:, :-1])
            if k == 0:
                resets[:, 0] = True
            yield tokens, resets

    return batches()
