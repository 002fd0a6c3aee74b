"""Tests of eggroll.data.text: corpus loading and caching, baselines, byte streams."""

from __future__ import annotations

import importlib.util
import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest

from eggroll.data import text
from eggroll.data.text import Corpus, TextStreams, baselines, load_corpus, validation_batches

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def documents(data: np.ndarray, starts: np.ndarray) -> list[bytes]:
    """The documents of a flat byte array, cut at ``starts``."""
    ends = list(starts[1:]) + [len(data)]
    return [np.asarray(data[s:e]).tobytes() for s, e in zip(starts, ends, strict=True)]


def in_valid(rel: str, valid_fraction: float) -> bool:
    """The split rule, written independently of the module."""
    return zlib.crc32(rel.encode("utf-8")) % 10_000 < valid_fraction * 10_000


def make_folder(root: Path, n: int = 24) -> dict[str, bytes]:
    """A folder of ``n`` small files in two levels, plus hidden and empty files to skip.

    Returns the non-hidden, non-empty files as ``{posix relpath: content}``.
    """
    files = {}
    for i in range(n):
        rel = f"sub{i % 3}/file{i:02d}.txt" if i % 2 else f"file{i:02d}.txt"
        content = f"document {i}\n".encode() * (i + 1)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        files[rel] = content
    (root / ".hidden.txt").write_bytes(b"hidden file")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(b"hidden folder")
    (root / "empty.txt").write_bytes(b"")
    return files


def constant_corpus(train: np.ndarray, valid: np.ndarray) -> Corpus:
    """A one-document-per-split corpus from in-memory arrays."""
    zero = np.zeros(1, dtype=np.int64)
    return Corpus("synthetic", train, valid, zero, zero)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# ---------------------------------------------------------------------------------------------
# load_corpus: folders and files
# ---------------------------------------------------------------------------------------------


def test_folder_split_follows_path_hash(tmp_path: Path, cache: Path) -> None:
    files = make_folder(tmp_path / "data")
    frac = 0.3
    expect_valid = [c for rel, c in sorted(files.items()) if in_valid(rel, frac)]
    expect_train = [c for rel, c in sorted(files.items()) if not in_valid(rel, frac)]
    assert expect_valid and expect_train, "the fixture must exercise the hash split"

    corpus = load_corpus(str(tmp_path / "data"), valid_fraction=frac, cache_dir=cache)
    assert corpus.name == "data"
    assert corpus.train.dtype == np.uint8 and corpus.train.ndim == 1
    assert corpus.valid.dtype == np.uint8 and corpus.valid.ndim == 1
    assert corpus.train_doc_starts.dtype == np.int64
    assert corpus.valid_doc_starts.dtype == np.int64
    assert corpus.train_doc_starts[0] == 0 and corpus.valid_doc_starts[0] == 0
    assert documents(corpus.train, corpus.train_doc_starts) == expect_train
    assert documents(corpus.valid, corpus.valid_doc_starts) == expect_valid
    assert corpus.num_train_docs == len(expect_train)
    assert corpus.num_valid_docs == len(expect_valid)


def test_folder_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    files = make_folder(tmp_path / "data")
    a = load_corpus(str(tmp_path / "data"), valid_fraction=0.3, cache_dir=tmp_path / "c1")
    b = load_corpus(str(tmp_path / "data"), valid_fraction=0.3, cache_dir=tmp_path / "c2")
    for x, y in [(a.train, b.train), (a.valid, b.valid)]:
        np.testing.assert_array_equal(x, y)
    train_docs = documents(a.train, a.train_doc_starts)
    valid_docs = documents(a.valid, a.valid_doc_starts)
    assert not set(train_docs) & set(valid_docs)
    assert sorted(train_docs + valid_docs) == sorted(files.values())


def test_single_file_tail_is_validation(tmp_path: Path, cache: Path) -> None:
    content = bytes(range(256)) * 40
    path = tmp_path / "book.txt"
    path.write_bytes(content)
    corpus = load_corpus(str(path), cache_dir=cache)
    n_valid = round(len(content) * 0.05)
    assert corpus.valid.tobytes() == content[-n_valid:]
    assert corpus.train.tobytes() == content[:-n_valid]
    assert corpus.num_train_docs == 1 and corpus.num_valid_docs == 1


def test_two_byte_file_gives_one_byte_each(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "tiny.txt"
    path.write_bytes(b"ab")
    corpus = load_corpus(str(path), cache_dir=cache)
    assert corpus.train.tobytes() == b"a" and corpus.valid.tobytes() == b"b"


def test_folder_with_one_file_falls_back_to_byte_cut(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "data").mkdir()
    content = b"the only document\n" * 100
    (tmp_path / "data" / "only.txt").write_bytes(content)
    corpus = load_corpus(str(tmp_path / "data"), cache_dir=cache)
    assert len(corpus.valid) == round(len(content) * 0.05)
    assert corpus.train.tobytes() + corpus.valid.tobytes() == content


def test_byte_cut_splits_the_straddling_document(tmp_path: Path, cache: Path) -> None:
    # Pick two names that both hash to train, so the hash split leaves valid empty.
    names = [f"f{i}.txt" for i in range(100) if not in_valid(f"f{i}.txt", 0.25)][:2]
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / names[0]).write_bytes(b"A" * 100)
    (folder / names[1]).write_bytes(b"B" * 20)
    corpus = load_corpus(str(folder), valid_fraction=0.25, cache_dir=cache)
    # 120 bytes, 30 valid: the cut falls inside the first document.
    assert documents(corpus.train, corpus.train_doc_starts) == [b"A" * 90]
    assert documents(corpus.valid, corpus.valid_doc_starts) == [b"A" * 10, b"B" * 20]


def test_missing_path_raises_file_not_found(tmp_path: Path, cache: Path) -> None:
    missing = tmp_path / "nowhere" / "corpus.txt"
    with pytest.raises(FileNotFoundError, match="nowhere") as info:
        load_corpus(str(missing), cache_dir=cache)
    assert "stdlib" in str(info.value) and "hf:" in str(info.value)


@pytest.mark.parametrize("kind", ["empty_file", "one_byte_file", "empty_folder", "hidden_only"])
def test_empty_corpus_raises_value_error(tmp_path: Path, cache: Path, kind: str) -> None:
    target = tmp_path / "data"
    if kind == "empty_file":
        target.write_bytes(b"")
    elif kind == "one_byte_file":
        target.write_bytes(b"x")
    else:
        target.mkdir()
        if kind == "hidden_only":
            (target / ".secret").write_bytes(b"not a document")
    with pytest.raises(ValueError, match="empty|no .*files|byte"):
        load_corpus(str(target), cache_dir=cache)


def test_folder_of_empty_files_raises_value_error(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="0 byte"):
        load_corpus(str(tmp_path / "data"), cache_dir=cache)


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1])
def test_bad_valid_fraction_raises(tmp_path: Path, cache: Path, frac: float) -> None:
    (tmp_path / "a.txt").write_bytes(b"hello")
    with pytest.raises(ValueError, match="valid_fraction"):
        load_corpus(str(tmp_path / "a.txt"), valid_fraction=frac, cache_dir=cache)


@pytest.mark.skipif(
    importlib.util.find_spec("datasets") is not None, reason="datasets is installed"
)
def test_hf_without_datasets_says_how_to_install(cache: Path) -> None:
    with pytest.raises(ImportError, match="pip install datasets"):
        load_corpus("hf:JeanKaddour/minipile", cache_dir=cache)


# ---------------------------------------------------------------------------------------------
# load_corpus: cache
# ---------------------------------------------------------------------------------------------


def test_second_load_uses_cache(tmp_path: Path, cache: Path, monkeypatch) -> None:
    make_folder(tmp_path / "data")
    first = load_corpus(str(tmp_path / "data"), valid_fraction=0.3, cache_dir=cache)

    def no_build(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(text, "_build", no_build)
    second = load_corpus(str(tmp_path / "data"), valid_fraction=0.3, cache_dir=cache)
    for arr in (first.train, first.valid, second.train, second.valid):
        assert isinstance(arr, np.memmap)
        assert Path(arr.filename).parent == cache.resolve()
        assert not arr.flags.writeable
    np.testing.assert_array_equal(first.train, second.train)
    np.testing.assert_array_equal(second.valid_doc_starts, first.valid_doc_starts)
    assert not list(cache.glob(".*.tmp")), "no temp files may be left behind"
    index = json.loads(next(cache.glob("*.json")).read_text())
    assert index["train"]["bytes"] == len(first.train)


def test_changed_file_rebuilds(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"0123456789" * 10)
    first = load_corpus(str(path), cache_dir=cache)
    path.write_bytes(b"abcdefghij" * 20)
    second = load_corpus(str(path), cache_dir=cache)
    assert second.train.tobytes() + second.valid.tobytes() == b"abcdefghij" * 20
    assert first.train.tobytes().startswith(b"0123")
    assert len(list(cache.glob("*.json"))) == 2


def test_incomplete_cache_entry_is_rebuilt(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"0123456789" * 10)
    load_corpus(str(path), cache_dir=cache)
    train_file = next(cache.glob("*.train.u8"))
    train_file.write_bytes(b"truncated")
    corpus = load_corpus(str(path), cache_dir=cache)
    assert len(corpus.train) == 95


def test_env_var_sets_default_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EGGROLL_CACHE", str(tmp_path / "envcache"))
    (tmp_path / "a.txt").write_bytes(b"some text here")
    corpus = load_corpus(str(tmp_path / "a.txt"))
    assert Path(corpus.train.filename).parent == (tmp_path / "envcache").resolve()


# ---------------------------------------------------------------------------------------------
# the stdlib corpus
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stdlib_corpus(tmp_path_factory) -> Corpus:
    return load_corpus(cache_dir=tmp_path_factory.mktemp("stdlib_cache"))


def test_stdlib_corpus_shape(stdlib_corpus: Corpus) -> None:
    c = stdlib_corpus
    assert c.name.startswith("stdlib-py")
    # ~1800 files at 5%: about 90 validation documents are expected (97 on CPython 3.11.7).
    assert c.num_train_docs > 1000 and c.num_valid_docs > 50
    frac = len(c.valid) / (len(c.train) + len(c.valid))
    assert 0.02 < frac < 0.10
    assert np.all(np.diff(c.train_doc_starts) > 0) and c.train_doc_starts[-1] < len(c.train)
    assert np.all(np.diff(c.valid_doc_starts) > 0) and c.valid_doc_starts[-1] < len(c.valid)


def test_stdlib_baselines_are_ordered(stdlib_corpus: Corpus) -> None:
    b = baselines(stdlib_corpus)
    assert set(b) == {"unigram", "bigram", "lzma"}
    assert all(0.0 < v <= 8.0 for v in b.values()), b
    assert b["unigram"] > b["bigram"] > 0
    assert b["lzma"] < b["unigram"]


# ---------------------------------------------------------------------------------------------
# baselines on synthetic data
# ---------------------------------------------------------------------------------------------


def test_baselines_constant_bytes_are_near_zero() -> None:
    corpus = constant_corpus(np.full(1_000_000, 65, np.uint8), np.full(100_000, 65, np.uint8))
    b = baselines(corpus)
    assert b["unigram"] < 0.1 and b["bigram"] < 0.1 and b["lzma"] < 0.1
    assert b["unigram"] == pytest.approx(-math.log2(1_000_001 / 1_000_256))


def test_baselines_uniform_bytes_are_near_eight() -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=220_000, dtype=np.uint8)
    b = baselines(constant_corpus(data[:200_000], data[200_000:]))
    assert b["unigram"] == pytest.approx(8.0, abs=0.05)
    assert b["lzma"] > 7.9


def test_baselines_alternating_bytes() -> None:
    corpus = constant_corpus(
        np.frombuffer(b"ab" * 100_000, np.uint8), np.frombuffer(b"ab" * 10_000, np.uint8)
    )
    b = baselines(corpus)
    assert b["unigram"] == pytest.approx(1.0, abs=0.01)
    assert b["bigram"] < 0.01


def test_bigram_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(1)
    train = rng.integers(97, 101, size=3000, dtype=np.uint8)
    valid = rng.integers(97, 102, size=500, dtype=np.uint8)
    train_starts = np.array([0, 700, 2000], np.int64)
    valid_starts = np.array([0, 123, 400], np.int64)
    corpus = Corpus("x", train, valid, train_starts, valid_starts)

    counts = np.bincount(train, minlength=256)
    unigram = (counts + 1) / (len(train) + 256)
    pairs = np.zeros((256, 256))
    for i in range(1, len(train)):
        if i not in set(train_starts):
            pairs[train[i - 1], train[i]] += 1
    bits = 0.0
    for i, b in enumerate(valid):
        if i in set(valid_starts):
            bits -= math.log2(unigram[b])
        else:
            a = valid[i - 1]
            bits -= math.log2((pairs[a, b] + unigram[b]) / (pairs[a].sum() + 1.0))
    expected_unigram = -sum(math.log2(unigram[b]) for b in valid) / len(valid)

    got = baselines(corpus)
    assert got["bigram"] == pytest.approx(bits / len(valid), rel=1e-9)
    assert got["unigram"] == pytest.approx(expected_unigram, rel=1e-9)


# ---------------------------------------------------------------------------------------------
# TextStreams
# ---------------------------------------------------------------------------------------------

DOCS = [b"hello ", b"world!", b"abc", b"0123456789", b"xy"]
DATA = np.frombuffer(b"".join(DOCS), np.uint8)
STARTS = np.cumsum([0] + [len(d) for d in DOCS[:-1]]).astype(np.int64)


def test_streams_shapes_and_start_at_documents() -> None:
    streams = TextStreams(DATA, STARTS, num_streams=7, seq_len=4, seed=3)
    assert streams.positions.dtype == np.int64 and streams.positions.shape == (7,)
    assert set(streams.positions.tolist()) <= set(STARTS.tolist())
    tokens, resets = streams.next_batch()
    assert tokens.shape == (7, 5) and tokens.dtype == np.uint8
    assert resets.shape == (7, 4) and resets.dtype == np.bool_
    assert resets[:, 0].all(), "every stream starts at a document start"


def test_streams_are_contiguous_with_correct_resets_across_wraps() -> None:
    n, seq_len, num_streams = len(DATA), 5, 4
    streams = TextStreams(DATA, STARTS, num_streams=num_streams, seq_len=seq_len, seed=0)
    start = streams.positions
    starts = set(STARTS.tolist())
    previous = None
    inputs, flags = [], []
    for _ in range(20):  # 100 bytes per stream: wraps the 27-byte corpus several times
        tokens, resets = streams.next_batch()
        if previous is not None:
            np.testing.assert_array_equal(previous[:, -1], tokens[:, 0])
        previous = tokens
        inputs.append(tokens[:, :-1])
        flags.append(resets)
    inputs_all, flags_all = np.concatenate(inputs, 1), np.concatenate(flags, 1)
    for s in range(num_streams):
        offsets = (start[s] + np.arange(20 * seq_len)) % n
        np.testing.assert_array_equal(inputs_all[s], DATA[offsets])
        np.testing.assert_array_equal(flags_all[s], [int(o) in starts for o in offsets])
    np.testing.assert_array_equal(streams.positions, (start + 20 * seq_len) % n)


def test_streams_wrap_inside_one_batch() -> None:
    streams = TextStreams(DATA, STARTS, num_streams=1, seq_len=4)
    n = len(DATA)
    assert n - 2 in STARTS and n - 3 not in STARTS
    streams.load_state_dict({**streams.state_dict(), "positions": [n - 3]})
    tokens, resets = streams.next_batch()
    np.testing.assert_array_equal(tokens[0], DATA[[n - 3, n - 2, n - 1, 0, 1]])
    np.testing.assert_array_equal(resets[0], [False, True, False, True])
    assert streams.positions.tolist() == [1]


def test_streams_state_dict_resumes_exactly() -> None:
    a = TextStreams(DATA, STARTS, num_streams=5, seq_len=3, seed=11)
    a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))
    b = TextStreams(DATA, STARTS, num_streams=5, seq_len=3, seed=99)
    b.load_state_dict(state)
    for _ in range(3):
        (ta, ra), (tb, rb) = a.next_batch(), b.next_batch()
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(ra, rb)


def test_streams_are_deterministic_in_seed() -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=10_000, dtype=np.uint8)
    starts = np.arange(0, 10_000, 50, dtype=np.int64)
    a = TextStreams(data, starts, num_streams=64, seq_len=8, seed=5)
    b = TextStreams(data, starts, num_streams=64, seq_len=8, seed=5)
    c = TextStreams(data, starts, num_streams=64, seq_len=8, seed=6)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert not np.array_equal(a.positions, c.positions)


@pytest.mark.parametrize(
    ("data", "starts", "num_streams", "seq_len", "match"),
    [
        (DATA, STARTS, 0, 4, "num_streams"),
        (DATA, STARTS, 2, 0, "seq_len"),
        (DATA, STARTS, 2, len(DATA), "seq_len"),
        (np.zeros(0, np.uint8), np.zeros(1, np.int64), 1, 1, "empty"),
        (DATA.astype(np.int32), STARTS, 1, 1, "uint8"),
        (DATA, STARTS[1:], 1, 1, "first entry is 0"),
        (DATA, STARTS[::-1].copy(), 1, 1, "first entry is 0|increasing"),
        (DATA, np.array([0, 5, 3], np.int64), 1, 1, "increasing"),
        (DATA, np.array([0, len(DATA)], np.int64), 1, 1, "below len"),
    ],
)
def test_streams_reject_bad_arguments(data, starts, num_streams, seq_len, match) -> None:
    with pytest.raises(ValueError, match=match):
        TextStreams(data, starts, num_streams=num_streams, seq_len=seq_len)


def test_streams_reject_mismatched_state() -> None:
    streams = TextStreams(DATA, STARTS, num_streams=2, seq_len=3)
    state = streams.state_dict()
    with pytest.raises(ValueError, match="num_streams"):
        streams.load_state_dict({**state, "positions": [0, 1, 2]})
    with pytest.raises(ValueError, match="bytes of data"):
        streams.load_state_dict({**state, "data_len": 5})
    with pytest.raises(ValueError, match="outside"):
        streams.load_state_dict({**state, "positions": [0, len(DATA)]})


# ---------------------------------------------------------------------------------------------
# validation_batches
# ---------------------------------------------------------------------------------------------


def test_validation_batches_cover_slices_in_order() -> None:
    rng = np.random.default_rng(2)
    data = rng.integers(0, 256, size=1003, dtype=np.uint8)
    starts = np.array([0, 10, 251, 600, 777], np.int64)
    num_streams, seq_len = 4, 16
    batches = list(validation_batches(data, starts, num_streams, seq_len))
    slice_len = 1003 // 4
    assert len(batches) == (slice_len - 1) // seq_len
    again = list(validation_batches(data, starts, num_streams, seq_len))
    for (t1, r1), (t2, r2) in zip(batches, again, strict=True):
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(r1, r2)
    for k in range(1, len(batches)):
        np.testing.assert_array_equal(batches[k - 1][0][:, -1], batches[k][0][:, 0])
    inputs = np.concatenate([t[:, :-1] for t, _ in batches], 1)
    resets = np.concatenate([r for _, r in batches], 1)
    covered = len(batches) * seq_len
    for s in range(num_streams):
        offsets = s * slice_len + np.arange(covered)
        np.testing.assert_array_equal(inputs[s], data[offsets])
        expected = np.isin(offsets, starts)
        expected[0] = True
        np.testing.assert_array_equal(resets[s], expected)
    for tokens, r in batches:
        assert tokens.shape == (4, 17) and tokens.dtype == np.uint8
        assert r.shape == (4, 16) and r.dtype == np.bool_


def test_validation_batches_respect_max_bytes() -> None:
    data = np.arange(200, dtype=np.uint8)
    batches = list(validation_batches(data, np.zeros(1, np.int64), 2, 5, max_bytes=40))
    # slices of 20 bytes: [0, 20) and [20, 40); (20 - 1) // 5 = 3 batches
    assert len(batches) == 3
    assert int(batches[-1][0].max()) < 40
    np.testing.assert_array_equal(batches[0][0][1], np.arange(20, 26))


def test_validation_batches_reject_bad_arguments_eagerly() -> None:
    with pytest.raises(ValueError, match="slice"):
        validation_batches(DATA, STARTS, num_streams=10, seq_len=4)
    with pytest.raises(ValueError, match="num_streams"):
        validation_batches(DATA, STARTS, num_streams=0, seq_len=4)
