"""Rebuilds a decoder LM's tokenizer from the metadata of its GGUF file.

A GGUF carries no tokenizer.json: llama.cpp stores the vocabulary, its token types, scores or
merges and the special ids as metadata (`tokenizer.ggml.*`). This module turns them back into a
`tokenizers.Tokenizer`, so irjax tokenizes exactly what the model was trained on without PyTorch,
transformers or a second download. Two vocabulary kinds (`tokenizer.ggml.model`) are supported:

* 'gpt2': byte-level BPE (SmolLM2, Qwen2, Llama 3). The merges are in the file; how text is cut
  before BPE depends on the model family, named by `tokenizer.ggml.pre` (`PRE_TOKENIZERS`: the
  split rules llama.cpp applies for each name). An unknown name is an error rather than a silent
  GPT-2 default: a wrong split gives different ids without any other sign.
* 'llama': SentencePiece-style BPE over '▁'-spelled pieces with byte fallback (Gemma 3, Llama 2).
  The file lists no merges; they are rebuilt from the vocabulary: every split of a piece into two
  pieces of the vocabulary is a merge, ranked by the piece's score, or for Gemma by the piece's
  position in the vocabulary (Gemma's scores do not follow its merge order; its ids do). Gemma
  files store runs of spaces as real spaces, which are respelled as '▁' runs.

Tokens typed CONTROL become special added tokens and USER_DEFINED ones plain added tokens, so
`<|im_start|>`, `<start_of_turn>` or Gemma's newline/tab runs are never cut into pieces. BOS/EOS
are added by the tokenizer's post-processor exactly when the file says so
(`tokenizer.ggml.add_bos_token`, default True for 'llama' vocabularies, False for 'gpt2', as
llama.cpp does); `encode(text, add_special_tokens=False)` leaves them out.
`tests/data/test_gguf_tokenizer.py` checks the ids against transformers' GGUF tokenizers
(tests/fixtures/lm/*.json) and a tiny GGUF written by `gguf.GGUFWriter`.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from gguf.constants import TokenType
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors

from irjax.data.gguf_metadata import read_gguf_metadata
from irjax.errors import InputFileError

# Split rules before byte-level BPE, by `tokenizer.ggml.pre` (the patterns llama.cpp uses).
_GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                   r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS: dict[str, tuple[str, ...]] = {
    "default": (_GPT2_PATTERN,),
    "gpt-2": (_GPT2_PATTERN,),
    "smollm": (r"\p{N}", _GPT2_PATTERN),  # every digit alone, then GPT-2's rule
    "starcoder": (r"\p{N}", _GPT2_PATTERN),
    "qwen2": (_QWEN2_PATTERN,),
    "deepseek-r1-qwen": (_QWEN2_PATTERN,),
    "llama-bpe": (_LLAMA3_PATTERN,),
    "llama3": (_LLAMA3_PATTERN,),
    "llama-v3": (_LLAMA3_PATTERN,),
}
# Families whose BPE takes a whole pre-token from the vocabulary before merging (llama.cpp's
# ignore_merges).
_IGNORE_MERGES = {"llama-bpe", "llama3", "llama-v3"}
# 'llama' vocabularies whose merges follow the token order, and whose space runs are stored as
# spaces (see the module docstring).
GEMMA_ARCHITECTURES = ("gemma", "gemma2", "gemma3", "gemma3n", "gemma-embedding")
SUPPORTED_MODELS = ("gpt2", "llama")


class UnsupportedTokenizerError(InputFileError):
    """The GGUF describes a tokenizer this module cannot rebuild, or contradicts itself."""


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """The special token ids a generator needs, and whether encoding adds BOS/EOS."""

    bos: int | None
    eos: int | None
    pad: int | None
    unk: int | None
    add_bos: bool
    add_eos: bool


@dataclasses.dataclass(frozen=True)
class TokenizerMetadata:
    """The `tokenizer.ggml.*` fields of one GGUF, checked for consistency."""

    path: Path
    architecture: str
    model: str
    pre: str | None
    tokens: list[str]
    token_types: np.ndarray  # int32 [V], gguf TokenType values
    scores: np.ndarray | None  # float32 [V] ('llama' vocabularies)
    merges: list[str] | None  # "left right" ('gpt2' vocabularies)
    add_space_prefix: bool
    special: SpecialIds


def _optional_id(metadata: dict[str, Any], key: str, size: int, path: Path) -> int | None:
    value = metadata.get(f"tokenizer.ggml.{key}")
    if value is None:
        return None
    if not 0 <= int(value) < size:
        raise UnsupportedTokenizerError(f"{path}: tokenizer.ggml.{key} = {value} is outside the "
                                        f"vocabulary of {size} tokens")
    return int(value)


def tokenizer_metadata(path: str | os.PathLike,
                       metadata: dict[str, Any] | None = None) -> TokenizerMetadata:
    """Reads and checks the tokenizer fields of the GGUF at `path` (or of its parsed `metadata`)."""
    path = Path(path)
    metadata = read_gguf_metadata(path) if metadata is None else metadata
    model = metadata.get("tokenizer.ggml.model")
    if model is None:
        raise UnsupportedTokenizerError(f"{path}: no tokenizer.ggml.model; this GGUF carries no "
                                        "tokenizer")
    if model not in SUPPORTED_MODELS:
        raise UnsupportedTokenizerError(
            f"{path}: tokenizer.ggml.model {model!r} is not supported; irjax rebuilds "
            f"{', '.join(SUPPORTED_MODELS)} vocabularies")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not tokens:
        raise UnsupportedTokenizerError(f"{path}: tokenizer.ggml.tokens is missing or empty")
    size = len(tokens)
    types = metadata.get("tokenizer.ggml.token_type")
    types = (np.full(size, TokenType.NORMAL, np.int32) if types is None
             else np.asarray(types, np.int32))
    scores = metadata.get("tokenizer.ggml.scores")
    merges = metadata.get("tokenizer.ggml.merges")
    for key, value in (("token_type", types), ("scores", scores)):
        if value is not None and len(value) != size:
            raise UnsupportedTokenizerError(f"{path}: tokenizer.ggml.{key} has {len(value)} "
                                            f"entries for {size} tokens")
    if model == "gpt2" and not merges:
        raise UnsupportedTokenizerError(f"{path}: a 'gpt2' vocabulary needs tokenizer.ggml.merges")
    if model == "llama" and scores is None:
        raise UnsupportedTokenizerError(f"{path}: a 'llama' vocabulary needs tokenizer.ggml.scores")
    if len(set(tokens)) != size:
        raise UnsupportedTokenizerError(f"{path}: tokenizer.ggml.tokens holds duplicates")
    add_bos = metadata.get("tokenizer.ggml.add_bos_token")
    special = SpecialIds(
        bos=_optional_id(metadata, "bos_token_id", size, path),
        eos=_optional_id(metadata, "eos_token_id", size, path),
        pad=_optional_id(metadata, "padding_token_id", size, path),
        unk=_optional_id(metadata, "unknown_token_id", size, path),
        add_bos=bool(model == "llama" if add_bos is None else add_bos),
        add_eos=bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
    )
    for flag, token in (("add_bos", special.bos), ("add_eos", special.eos)):
        if getattr(special, flag) and token is None:
            raise UnsupportedTokenizerError(f"{path}: tokenizer.ggml.{flag}_token is set but the "
                                            f"file names no {flag[4:]} token id")
    return TokenizerMetadata(
        path=path, architecture=str(metadata.get("general.architecture", "")), model=model,
        pre=metadata.get("tokenizer.ggml.pre"), tokens=list(tokens), token_types=types,
        scores=None if scores is None else np.asarray(scores, np.float32),
        merges=None if merges is None else list(merges),
        add_space_prefix=bool(metadata.get("tokenizer.ggml.add_space_prefix",
                                           model == "llama")),
        special=special)


# ---- byte-level BPE ('gpt2') ----

def _byte_alphabet() -> dict[int, str]:
    """GPT-2's printable spelling of the 256 bytes (printable Latin-1 bytes stand for
    themselves, the others are shifted to U+0100 and above)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    spelling, shift = {}, 0
    for byte in range(256):
        if byte in keep:
            spelling[byte] = chr(byte)
        else:
            spelling[byte] = chr(256 + shift)
            shift += 1
    return spelling


def _byte_level(meta: TokenizerMetadata) -> tuple[Tokenizer, list[str]]:
    pre = meta.pre or "default"
    if pre not in PRE_TOKENIZERS:
        raise UnsupportedTokenizerError(
            f"{meta.path}: tokenizer.ggml.pre {pre!r} is not supported (its split rule is not "
            f"known to irjax); supported: {', '.join(sorted(PRE_TOKENIZERS))}")
    spelling = _byte_alphabet()
    alphabet = set(spelling.values())
    # The file spells tokens in the byte alphabet already; any that is not (a mislabelled added
    # token) is respelled from its UTF-8 bytes so the BPE model can still hold it.
    spelled = [t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8"))
               for t in meta.tokens]
    vocab = {token: index for index, token in enumerate(spelled)}
    merges = []
    for line_number, line in enumerate(meta.merges or []):
        parts = line.split(" ")
        if len(parts) != 2 or parts[0] + parts[1] not in vocab:
            raise UnsupportedTokenizerError(f"{meta.path}: tokenizer.ggml.merges[{line_number}] "
                                            f"{line!r} is not 'left right' of a vocabulary token")
        merges.append((parts[0], parts[1]))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False,
                                     ignore_merges=pre in _IGNORE_MERGES))
    patterns = PRE_TOKENIZERS[pre]
    if patterns == (_GPT2_PATTERN,):
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(p), behavior="isolated") for p in patterns]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    # Added tokens must be spelled as the vocabulary spells them to keep their ids.
    return tokenizer, [t if t in vocab else "" for t in meta.tokens]


# ---- SentencePiece-style BPE ('llama') ----

def _sentencepiece_merges(pieces: Sequence[str], rank_by_position: bool,
                          scores: np.ndarray | None) -> list[tuple[str, str]]:
    """Every (left, right) whose concatenation is a piece, best first: by the piece's position
    (Gemma) or its score, then the longer left part first."""
    index = set(pieces)
    found = []  # (piece index, cut), pieces in order and each piece's longer left part first
    for i, piece in enumerate(pieces):
        for cut in range(len(piece) - 1, 0, -1):
            if piece[:cut] in index and piece[cut:] in index:
                found.append((i, cut))
    if not rank_by_position:  # by score, then longer left, then longer right part; Python's
        assert scores is not None  # sort is stable, so equal keys keep the order above
        score = scores.tolist()
        found.sort(key=lambda e: (-score[e[0]], -e[1], e[1] - len(pieces[e[0]])))
    return [(pieces[i][:cut], pieces[i][cut:]) for i, cut in found]


def _sentencepiece(meta: TokenizerMetadata) -> tuple[Tokenizer, list[str]]:
    gemma = meta.architecture in GEMMA_ARCHITECTURES
    pieces = list(meta.tokens)
    if gemma:  # space runs are stored as spaces: the normalizer turns text spaces into '▁'
        pieces = ["▁" * len(p) if " " in p and not p.strip() else p for p in pieces]
        if len(set(pieces)) != len(pieces):
            raise UnsupportedTokenizerError(f"{meta.path}: respelling space tokens as '▁' runs "
                                            "made two tokens equal")
    vocab = {piece: i for i, piece in enumerate(pieces)}
    merges = _sentencepiece_merges(pieces, rank_by_position=gemma, scores=meta.scores)
    unk = pieces[meta.special.unk] if meta.special.unk is not None else None
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True,
                                     byte_fallback=True))
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if gemma:
        tokenizer.normalizer = normalizers.Replace(" ", "▁")
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement="▁", prepend_scheme="first" if meta.add_space_prefix else "never",
            split=False)
        if meta.add_space_prefix:
            steps.append(decoders.Strip(content=" ", left=1, right=0))
    tokenizer.decoder = decoders.Sequence(steps)
    return tokenizer, [t if t in vocab else "" for t in meta.tokens]


# ---- both ----

def _add_typed_tokens(tokenizer: Tokenizer, meta: TokenizerMetadata,
                      spelled: Sequence[str]) -> None:
    """CONTROL tokens as special added tokens, USER_DEFINED as plain ones (never split)."""
    control = [AddedToken(spelled[i], special=True, normalized=False)
               for i in np.flatnonzero(meta.token_types == TokenType.CONTROL) if spelled[i]]
    user = [AddedToken(spelled[i], special=False, normalized=False)
            for i in np.flatnonzero(meta.token_types == TokenType.USER_DEFINED) if spelled[i]]
    if control:
        tokenizer.add_special_tokens(control)
    if user:
        tokenizer.add_tokens(user)
    if tokenizer.get_vocab_size(with_added_tokens=True) != len(meta.tokens):
        raise UnsupportedTokenizerError(f"{meta.path}: added tokens changed the vocabulary size "
                                        f"({tokenizer.get_vocab_size(True)} != "
                                        f"{len(meta.tokens)})")


def _post_processor(tokenizer: Tokenizer, meta: TokenizerMetadata) -> None:
    special = meta.special
    single, pair, ids = ["$A:0"], ["$A:0", "$B:1"], []
    if special.add_bos:
        bos = meta.tokens[special.bos]  # type: ignore[index]
        single, pair = [f"{bos}:0"] + single, [f"{bos}:0", "$A:0", f"{bos}:1", "$B:1"]
        ids.append((bos, special.bos))
    if special.add_eos:
        eos = meta.tokens[special.eos]  # type: ignore[index]
        single.append(f"{eos}:0")
        pair = pair[:pair.index("$A:0") + 1] + [f"{eos}:0"] + pair[pair.index("$A:0") + 1:] + [
            f"{eos}:1"]
        ids.append((eos, special.eos))
    if ids:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=" ".join(single), pair=" ".join(pair), special_tokens=list(dict.fromkeys(ids)))


def build_tokenizer(meta: TokenizerMetadata) -> Tokenizer:
    """The `tokenizers.Tokenizer` the checked metadata describes (module docstring)."""
    builder = _byte_level if meta.model == "gpt2" else _sentencepiece
    tokenizer, spelled = builder(meta)
    _add_typed_tokens(tokenizer, meta, spelled)
    _post_processor(tokenizer, meta)
    return tokenizer


def load_gguf_tokenizer(path: str | os.PathLike) -> tuple[Tokenizer, SpecialIds]:
    """The tokenizer of the GGUF at `path` and its special ids (one read of the file)."""
    meta = tokenizer_metadata(path)
    return build_tokenizer(meta), meta.special


def tokenizer_from_gguf(path: str | os.PathLike) -> Tokenizer:
    """The tokenizer of the GGUF at `path`; `load_gguf_tokenizer` also gives the special ids."""
    return load_gguf_tokenizer(path)[0]
