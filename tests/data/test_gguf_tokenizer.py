"""irjax/data/gguf_tokenizer.py and gguf_metadata.py: tiny GGUFs written with gguf.GGUFWriter
round-trip (no weights needed), and on the fetched models the rebuilt tokenizers give exactly the
ids transformers' GGUF tokenizers gave (tests/fixtures/lm/*.json, tools/make_lm_reference.py)."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter
from gguf.constants import TokenType

from irjax.data.gguf_metadata import read_gguf_metadata
from irjax.data.gguf_tokenizer import (UnsupportedTokenizerError, load_gguf_tokenizer,
                                       tokenizer_from_gguf)
from irjax.errors import InputFileError
from irjax.models.weights_dir import weights_root

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lm"
NORMAL, CONTROL, USER, BYTE = (TokenType.NORMAL, TokenType.CONTROL, TokenType.USER_DEFINED,
                               TokenType.BYTE)


def write_gguf(path: Path, arch: str = "llama", **fields: Any) -> Path:
    """A GGUF holding only tokenizer metadata (`fields` named after GGUFWriter's add_* methods)."""
    writer = GGUFWriter(str(path), arch)
    for name, value in fields.items():
        getattr(writer, f"add_{name}")(value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# A byte-level vocabulary: 'Ġ' spells the space byte; merges build "ab", "abc", "Ġabc", "12".
BPE_TOKENS = ["<|end|>", "a", "b", "c", "Ġ", "1", "2", "ab", "abc", "Ġabc", "12", "<think>"]
BPE_TYPES = [CONTROL] + [NORMAL] * 10 + [USER]
BPE_MERGES = ["a b", "ab c", "Ġ abc", "1 2"]


def bpe_gguf(path: Path, pre: str = "smollm", **extra: Any) -> Path:
    fields = dict(tokenizer_model="gpt2", tokenizer_pre=pre, token_list=BPE_TOKENS,
                  token_types=BPE_TYPES, token_merges=BPE_MERGES, bos_token_id=0,
                  eos_token_id=0, pad_token_id=0)
    return write_gguf(path, **{**fields, **extra})


def ids(*tokens: str, vocab: list[str] = BPE_TOKENS) -> list[int]:
    return [vocab.index(t) for t in tokens]


def test_metadata_reader_matches_gguf_reader(tmp_path):
    path = bpe_gguf(tmp_path / "t.gguf", token_scores=[0.5 * i for i in range(len(BPE_TOKENS))],
                    add_bos_token=True)
    ours = read_gguf_metadata(path)
    reference = GGUFReader(str(path)).fields
    keys = [k for k in reference if not k.startswith("GGUF.")]
    assert sorted(keys) == sorted(k for k in ours if not k.startswith("GGUF."))
    for key in keys:
        expected, value = reference[key].contents(), ours[key]
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, np.asarray(expected))
        else:
            assert value == expected, key


def test_byte_level_round_trip(tmp_path):
    tokenizer, special = load_gguf_tokenizer(bpe_gguf(tmp_path / "t.gguf"))
    assert (special.bos, special.eos, special.pad, special.unk) == (0, 0, 0, None)
    assert not special.add_bos  # a 'gpt2' vocabulary adds no BOS unless the file says so
    # 'smollm' cuts every digit alone before BPE, so "12" never forms; the space joins "abc".
    assert tokenizer.encode("abc abc12").ids == ids("abc", "Ġabc", "1", "2")
    # CONTROL and USER_DEFINED tokens stay whole, wherever they are.
    assert tokenizer.encode("<think>abc<|end|>").ids == ids("<think>", "abc", "<|end|>")
    assert tokenizer.decode(tokenizer.encode("abc abc12<|end|>").ids,
                            skip_special_tokens=False) == "abc abc12<|end|>"
    assert tokenizer.get_vocab_size() == len(BPE_TOKENS)


def test_byte_level_pre_tokenizer_follows_the_file(tmp_path):
    gpt2 = tokenizer_from_gguf(bpe_gguf(tmp_path / "gpt2.gguf", pre="default"))
    qwen2 = tokenizer_from_gguf(bpe_gguf(tmp_path / "qwen2.gguf", pre="qwen2"))
    assert gpt2.encode("abc abc12").ids == ids("abc", "Ġabc", "12")  # digits stay together
    assert qwen2.encode("abc abc12").ids == ids("abc", "Ġabc", "1", "2")  # \p{N} alone


def test_add_bos_from_the_file(tmp_path):
    tokenizer, special = load_gguf_tokenizer(bpe_gguf(tmp_path / "t.gguf", add_bos_token=True))
    assert special.add_bos
    assert tokenizer.encode("abc").ids == ids("<|end|>", "abc")
    assert tokenizer.encode("abc", add_special_tokens=False).ids == ids("abc")


# A SentencePiece-style vocabulary: specials, the 256 byte pieces, then pieces with scores.
SPM_HEAD = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
SPM_PIECES = ["▁", "a", "b", "c", "bc", "ab", "  ", "▁a"]


def spm_gguf(path: Path, arch: str, scores: dict[str, float], **extra: Any) -> Path:
    tokens = SPM_HEAD + SPM_PIECES
    types = [TokenType.UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256 + [NORMAL] * len(SPM_PIECES)
    fields = dict(tokenizer_model="llama", token_list=tokens, token_types=types,
                  token_scores=[float(scores.get(t, -100.0)) for t in tokens], bos_token_id=1,
                  eos_token_id=2, unk_token_id=0, add_space_prefix=False)
    return write_gguf(path, arch, **{**fields, **extra})


def spm_ids(*pieces: str) -> list[int]:
    return [(SPM_HEAD + SPM_PIECES).index(p) for p in pieces]


def test_sentencepiece_merges_follow_scores(tmp_path):
    ab_first = tokenizer_from_gguf(spm_gguf(tmp_path / "a.gguf", "llama", {"ab": -1, "bc": -2}))
    bc_first = tokenizer_from_gguf(spm_gguf(tmp_path / "b.gguf", "llama", {"ab": -2, "bc": -1}))
    assert ab_first.encode("abc", add_special_tokens=False).ids == spm_ids("ab", "c")
    assert bc_first.encode("abc", add_special_tokens=False).ids == spm_ids("a", "bc")
    # 'llama' vocabularies add BOS by default; a character outside the vocabulary falls back to
    # its UTF-8 bytes.
    assert ab_first.encode("aé").ids == spm_ids("<s>", "a", "<0xC3>", "<0xA9>")
    assert ab_first.decode(ab_first.encode("aé abc").ids, skip_special_tokens=True) == "aé abc"


def test_sentencepiece_space_prefix(tmp_path):
    path = spm_gguf(tmp_path / "p.gguf", "llama", {"▁a": 0}, add_space_prefix=True)
    tokenizer = tokenizer_from_gguf(path)
    assert tokenizer.encode("a a", add_special_tokens=False).ids == spm_ids("▁a", "▁a")
    assert tokenizer.decode(tokenizer.encode("a a").ids, skip_special_tokens=True) == "a a"


def test_gemma_merges_follow_token_order_and_space_runs(tmp_path):
    # Scores say "ab" first, but in a Gemma vocabulary the order of the pieces decides ("bc"
    # comes first in SPM_PIECES); runs of spaces are stored as spaces and still match.
    tokenizer = tokenizer_from_gguf(spm_gguf(tmp_path / "g.gguf", "gemma3", {"ab": -1, "bc": -2}))
    assert tokenizer.encode("abc", add_special_tokens=False).ids == spm_ids("a", "bc")
    assert tokenizer.encode("a  b", add_special_tokens=False).ids == spm_ids("a", "  ", "b")
    assert tokenizer.decode(tokenizer.encode("a  bc").ids, skip_special_tokens=True) == "a  bc"


@pytest.mark.parametrize("fields, message", [
    (dict(tokenizer_model="bert"), "'bert' is not supported"),
    (dict(tokenizer_pre="mystery"), "tokenizer.ggml.pre 'mystery' is not supported"),
    (dict(token_merges=["a q"]), r"merges\[0\] 'a q'"),
    (dict(token_types=[NORMAL]), "1 entries for 12 tokens"),
    (dict(bos_token_id=99), "outside the vocabulary"),
    (dict(add_bos_token=True, bos_token_id=None), None),
])
def test_bad_tokenizer_metadata_is_named(tmp_path, fields, message):
    if message is None:  # add_bos without a BOS id
        path = write_gguf(tmp_path / "t.gguf", tokenizer_model="gpt2", token_list=BPE_TOKENS,
                          token_merges=BPE_MERGES, add_bos_token=True)
        message = "names no bos token id"
    else:
        path = bpe_gguf(tmp_path / "t.gguf", **fields)
    with pytest.raises(UnsupportedTokenizerError, match=message) as error:  # a regex
        tokenizer_from_gguf(path)
    assert str(path) in str(error.value)


def test_damaged_files_are_named(tmp_path):
    good = bpe_gguf(tmp_path / "t.gguf").read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good[: len(good) // 3])
    with pytest.raises(InputFileError, match="truncated"):
        read_gguf_metadata(truncated)
    other = tmp_path / "other.gguf"
    other.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(InputFileError, match="not a GGUF file"):
        read_gguf_metadata(other)


# ---- the fetched models against transformers' GGUF tokenizers ----

def _fixture_names() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json")
                  if "gguf_sha256" in json.loads(p.read_text(encoding="utf-8")))


def _fetched_gguf(name: str) -> Path:
    path = weights_root() / name / "model.gguf"
    if not path.is_file():
        pytest.skip(f"{path} not fetched; run `python tools/fetch_weights.py {name}`")
    return path


@functools.lru_cache(maxsize=None)
def _real_tokenizer(path: Path):
    """Built once per file: Gemma's 262k-piece vocabulary takes seconds to rebuild."""
    return load_gguf_tokenizer(path)


def test_fixtures_exist():
    assert {"smollm2-135m-instruct", "gemma3-270m", "qwen2.5-coder-0.5b-instruct"} <= set(
        _fixture_names())


@pytest.mark.parametrize("name", _fixture_names())
def test_tokenizer_matches_reference_ids(name):
    record = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    tokenizer, special = _real_tokenizer(_fetched_gguf(name))
    mismatches = [(text, tokenizer.encode(text).tokens, expected)
                  for text, expected in zip(record["texts"], record["token_ids"])
                  if tokenizer.encode(text).ids != expected]
    assert not mismatches, mismatches[:3]
    reference = record["special_ids"]
    assert (special.bos, special.eos, special.pad) == (reference["bos"], reference["eos"],
                                                      reference["pad"])
    # The logit prompts are the reference tokenization cut to T tokens.
    prompts = np.load(FIXTURES / f"{name}.npz")["input_ids"]
    for row, index in zip(prompts, record["prompt_texts"]):
        assert row.tolist() == tokenizer.encode(record["texts"][index]).ids[: len(row)]


def test_gemma_tokenizer_matches_the_original_tokenizer_json():
    """The same Gemma 3 vocabulary ships as a Hugging Face tokenizer.json with EmbeddingGemma:
    an independent reference for the rebuilt merges (specials aside: EmbeddingGemma adds EOS)."""
    from tokenizers import Tokenizer

    original = weights_root() / "embeddinggemma-300m" / "tokenizer.json"
    if not original.is_file():
        pytest.skip(f"{original} not fetched; run `python tools/fetch_weights.py "
                    "embeddinggemma-300m`")
    ours = _real_tokenizer(_fetched_gguf("gemma3-270m"))[0]
    theirs = Tokenizer.from_file(str(original))
    texts = json.loads((FIXTURES / "gemma3-270m.json").read_text(encoding="utf-8"))["texts"]
    for text in texts:
        assert (ours.encode(text, add_special_tokens=False).ids
                == theirs.encode(text, add_special_tokens=False).ids), text
