"""Tokenizers: WordPiece must reproduce the Hugging Face tokenizer's ids exactly (stored in the
MiniLM fixture by tools/make_reference_vectors.py); SentencePiece must follow T5's conventions."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from irjax.data.tokenization import (
    SentencePieceTokenizer,
    WordPieceTokenizer,
    default_t5_spiece_path,
    pad_sequences,
)
from irjax.models.pretrained import find_minilm_dir

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "minilm_reference.npz"


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    try:
        return find_minilm_dir()
    except FileNotFoundError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def wordpiece(minilm_dir) -> WordPieceTokenizer:
    return WordPieceTokenizer(minilm_dir)


@pytest.fixture(scope="module")
def reference():
    return np.load(FIXTURE)


def test_wordpiece_matches_hugging_face_ids(wordpiece, reference):
    texts = [str(t) for t in reference["texts"]]
    max_length = int(reference["max_seq_length"])
    batch = wordpiece.encode(texts, max_length)
    np.testing.assert_array_equal(batch.lengths, reference["lengths"])
    np.testing.assert_array_equal(batch.ids, reference["ids"])
    np.testing.assert_array_equal(batch.mask, (reference["ids"] != 0).astype(np.int32))
    assert batch.ids.dtype == np.int32 and batch.mask.dtype == np.int32
    assert (batch.lengths == max_length).sum() >= 2, "fixture must exercise truncation"


def test_wordpiece_specials_truncation_and_padding(wordpiece):
    long_text = "retrieval " * 400
    batch = wordpiece.encode(["hi", long_text], max_length=16)
    assert batch.ids.shape == (2, 16)
    assert batch.ids[0, 0] == wordpiece.cls_id and batch.ids[0, 2] == wordpiece.sep_id
    assert batch.lengths.tolist() == [3, 16]
    assert batch.ids[1, -1] == wordpiece.sep_id and batch.ids[1, 0] == wordpiece.cls_id
    assert (batch.ids[0, 3:] == wordpiece.pad_id).all() and batch.mask[0].tolist() == [1] * 3 + [0] * 13

    fixed = wordpiece.encode(["hi"], max_length=16, pad_to=24)
    assert fixed.ids.shape == (1, 24) and fixed.mask.sum() == 3


def test_wordpiece_lowercases_as_the_checkpoint_says(wordpiece):
    upper, lower = wordpiece.tokenize(["HELLO World"], 32)[0], wordpiece.tokenize(["hello world"], 32)[0]
    np.testing.assert_array_equal(upper, lower)
    assert wordpiece.decode(upper) == "hello world"


def test_vocab_txt_fallback_gives_the_same_ids(wordpiece, minilm_dir, tmp_path, reference):
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(minilm_dir / name, tmp_path / name)
    fallback = WordPieceTokenizer(tmp_path)
    assert fallback.source.name == "vocab.txt"
    texts = [str(t) for t in reference["texts"]]
    np.testing.assert_array_equal(fallback.encode(texts, 256).ids, wordpiece.encode(texts, 256).ids)


def test_wordpiece_errors_say_what_to_do(tmp_path, wordpiece):
    with pytest.raises(FileNotFoundError, match="tokenizer.json or vocab.txt"):
        WordPieceTokenizer(tmp_path)
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        wordpiece.tokenize(["x"], 1)
    with pytest.raises(TypeError, match="wrap a single text"):
        wordpiece.tokenize("a string", 8)


def test_pad_sequences_static_rows_and_errors():
    batch = pad_sequences([[5, 6, 7], [8]], pad_id=0, pad_to=4, rows=3)
    assert batch.ids.tolist() == [[5, 6, 7, 0], [8, 0, 0, 0], [0, 0, 0, 0]]
    assert batch.mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert batch.lengths.tolist() == [3, 1, 0] and len(batch) == 3
    with pytest.raises(ValueError, match="truncate first"):
        pad_sequences([[1, 2, 3]], pad_to=2)
    with pytest.raises(ValueError, match="rows=1"):
        pad_sequences([[1], [2]], rows=1)


@pytest.fixture(scope="module")
def t5():
    try:
        return SentencePieceTokenizer(default_t5_spiece_path())
    except FileNotFoundError as err:
        pytest.skip(str(err))


def test_sentencepiece_t5_conventions(t5):
    batch = t5.encode(["Hello world", "a much longer sentence than the first one"], max_length=8)
    # Known ids of the standard T5 vocabulary: "Hello" 8774, "world" 296, EOS 1, pad 0.
    assert batch.ids[0].tolist() == [8774, 296, 1, 0, 0, 0, 0, 0]
    assert batch.ids.shape == (2, 8) and batch.ids[1, -1] == t5.eos_id
    assert batch.mask[0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert t5.vocab_size == 32000
    no_eos = t5.encode(["Hello world"], max_length=8, add_eos=False)
    assert no_eos.ids[0].tolist() == [8774, 296]


def test_sentencepiece_decode_roundtrip(t5):
    texts = ["The cat sat on the mat.", "Numbers 3.14 and 42!"]
    batch = t5.encode(texts, max_length=32, pad_to=40)
    assert t5.decode_batch(batch.ids) == texts
    assert t5.decode([8774, 1, 296, 0]) == "Hello"  # stops at EOS


def test_t5_path_helper(monkeypatch, tmp_path, t5):
    monkeypatch.setenv("IRJAX_ASSETS_DIR", str(t5.path.parents[1]))
    assert default_t5_spiece_path() == t5.path
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SentencePieceTokenizer(tmp_path / "missing.model")
