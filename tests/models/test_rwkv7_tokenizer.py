"""The RWKV World tokenizer: id-for-id agreement with the rwkv package's TRIE_TOKENIZER
(stored ids, made by scripts/make_rwkv7_fixture.py), round trips, batches, file checks."""

import json

import numpy as np
import pytest

from eggroll.models import rwkv_tokenizer
from tests.models.llm_fixtures import FIXTURES

VOCAB = FIXTURES / "rwkv7_vocab"
DATA = json.loads((VOCAB / "texts.json").read_text())
TOK = rwkv_tokenizer.WorldTokenizer.from_file(VOCAB / "vocab.txt")


@pytest.mark.parametrize("index", range(len(DATA["texts"])))
def test_ids_match_the_reference_and_round_trip(index):
    text, ids = DATA["texts"][index], DATA["ids"][index]
    assert TOK.encode(text) == ids
    assert TOK.decode(ids) == text


def test_multibyte_text_uses_multibyte_tokens_and_cut_characters_decode_safely():
    ids = TOK.encode("中文文本")
    assert len(ids) < len("中文文本".encode())
    assert TOK.decode(TOK.encode_bytes("é".encode()[:1])) == "\ufffd"


def test_batch_special_ids_and_errors(tmp_path):
    ids, mask = TOK.batch(["def", "12 + 34"])
    assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == mask.shape
    assert ids[0, 0] == 0 and not mask[0, 0] and mask[1].all()
    assert (TOK.bos_id, TOK.eos_ids, TOK.pad_id) == (None, (0,), 0)
    assert TOK.decode([0, *TOK.encode("ok"), 0]) == "ok"
    with pytest.raises(ValueError, match="no BOS"):
        TOK.encode("x", add_bos=True)
    (tmp_path / "bad.txt").write_text("1 'a' 1\n2 'bc' 3\n")
    with pytest.raises(ValueError, match="line 2"):
        rwkv_tokenizer.WorldTokenizer.from_file(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError, match="rwkv_vocab_v20230424.txt"):
        rwkv_tokenizer.load(tmp_path)
    TOK.save(tmp_path)
    assert rwkv_tokenizer.load(tmp_path).encode("hello") == TOK.encode("hello")


def test_full_vocabulary_agrees_with_the_rwkv_package():
    """Only where the rwkv package is installed (it ships the 1 MB vocabulary)."""
    reference_module = pytest.importorskip("rwkv.rwkv_tokenizer")
    path = rwkv_tokenizer.package_vocab()
    reference = reference_module.TRIE_TOKENIZER(str(path))
    ours = rwkv_tokenizer.WorldTokenizer.from_file(path)
    rng = np.random.default_rng(0)
    pieces = [*DATA["texts"], "\n\n", "User: hi\n\nAssistant:", "   x = [i**2 for i in y]"]
    texts = ["".join(rng.choice(pieces, size=4)) for _ in range(50)]
    for text in texts + pieces:
        assert ours.encode(text) == reference.encode(text)
        assert ours.decode(ours.encode(text)) == text
