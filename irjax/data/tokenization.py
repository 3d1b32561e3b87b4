"""Tokenizers that turn text into fixed-dtype id/mask arrays the models consume.

Two vocabularies are needed: BERT-style WordPiece for pretrained encoders (read from the checkpoint
so lowercasing and special tokens match what the weights were trained with) and T5's SentencePiece
for models trained from scratch. Both return `TokenizedBatch`, so batching code is shared.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from irjax.errors import MissingFileError


@dataclasses.dataclass(frozen=True)
class TokenizedBatch:
    """Right-padded ids with a 0/1 mask; `lengths` counts real tokens (specials included)."""

    ids: np.ndarray  # int32 [n, L]
    mask: np.ndarray  # int32 [n, L]
    lengths: np.ndarray  # int32 [n]

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def pad_sequences(
    sequences: Sequence[Sequence[int] | np.ndarray],
    pad_id: int = 0,
    pad_to: int | None = None,
    rows: int | None = None,
) -> TokenizedBatch:
    """Right-pads id lists into arrays.

    `pad_to` fixes the column count (for jit-friendly static shapes; defaults to the longest
    sequence); `rows` appends all-padding rows so the batch dimension is static too.
    """
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int32, count=len(sequences))
    longest = int(lengths.max(initial=0))
    width = longest if pad_to is None else int(pad_to)
    if longest > width:
        raise ValueError(
            f"a sequence has {longest} tokens but pad_to={width}; truncate first or raise pad_to"
        )
    n_rows = len(sequences) if rows is None else int(rows)
    if n_rows < len(sequences):
        raise ValueError(f"rows={n_rows} is smaller than the {len(sequences)} sequences given")
    ids = np.full((n_rows, width), pad_id, dtype=np.int32)
    mask = np.zeros((n_rows, width), dtype=np.int32)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = seq
        mask[i, : len(seq)] = 1
    lengths = np.concatenate([lengths, np.zeros(n_rows - len(sequences), np.int32)])
    return TokenizedBatch(ids=ids, mask=mask, lengths=lengths)


class WordPieceTokenizer:
    """BERT WordPiece via the `tokenizers` library, configured from a checkpoint directory.

    Truncation and special tokens are applied here rather than by the tokenizer.json settings,
    because checkpoints ship arbitrary defaults (all-MiniLM-L6-v2's says truncate/pad to 128,
    while sentence-transformers uses 256).
    """

    def __init__(self, checkpoint_dir: str | os.PathLike):
        from tokenizers import Tokenizer
        from tokenizers.implementations import BertWordPieceTokenizer

        directory = Path(checkpoint_dir)
        tokenizer_json = directory / "tokenizer.json"
        vocab_txt = directory / "vocab.txt"
        if tokenizer_json.exists():
            self._tok = Tokenizer.from_file(str(tokenizer_json))
            self.source = tokenizer_json
        elif vocab_txt.exists():
            self._tok = BertWordPieceTokenizer(
                str(vocab_txt), lowercase=_do_lower_case(directory)
            )._tokenizer
            self.source = vocab_txt
        else:
            raise MissingFileError(
                f"no tokenizer.json or vocab.txt in {directory}; pass the checkpoint directory "
                "that holds the model's tokenizer files"
            )
        self._tok.no_padding()
        self._tok.no_truncation()
        self.cls_id = self._special_id("[CLS]")
        self.sep_id = self._special_id("[SEP]")
        self.pad_id = self._special_id("[PAD]")
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def continuation_ids(self) -> tuple[int, ...]:
        """Ids of the pieces that continue the previous word (WordPiece writes them `##...`).

        This is what whole-word pooling needs: a token's word starts at the last piece that is
        not a continuation, so word ids follow from the token ids alone, on the device, without
        carrying per-token word ids through the data pipeline."""
        vocab = self._tok.get_vocab(with_added_tokens=True)
        return tuple(sorted(int(i) for piece, i in vocab.items() if piece.startswith("##")))

    @property
    def special_ids(self) -> tuple[int, ...]:
        """[CLS], [SEP] and [PAD]: tokens that belong to no word."""
        return tuple(sorted({self.cls_id, self.sep_id, self.pad_id}))

    def _special_id(self, token: str) -> int:
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{self.source} has no {token} token; is this a BERT-style vocabulary?")
        return int(token_id)

    def tokenize(self, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
        """Ids per text, `[CLS] pieces [SEP]`, truncated to `max_length` tokens in total."""
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 to hold [CLS] and [SEP], got {max_length}")
        if isinstance(texts, str):
            raise TypeError("tokenize takes a sequence of strings; wrap a single text in a list")
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
        out = []
        for enc in encodings:
            pieces = enc.ids[: max_length - 2]
            seq = np.empty(len(pieces) + 2, dtype=np.int32)
            seq[0] = self.cls_id
            seq[1:-1] = pieces
            seq[-1] = self.sep_id
            out.append(seq)
        return out

    def tokenize_pairs(
        self,
        queries: Sequence[str],
        documents: Sequence[str],
        max_length: int,
        query_max_length: int | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(ids, token type ids) per pair, `[CLS] query [SEP] document [SEP]`, types 0 then 1.

        The document is cut first: the query keeps up to `query_max_length` pieces (and always
        leaves room for the three specials), the document gets what remains of `max_length`.
        A cross-encoder judges the query as a whole, while a document's relevant part is
        usually near its start (title, first sentences), so the document side is the one to cut.
        """
        if max_length < 3:
            raise ValueError(f"max_length must be >= 3 to hold [CLS] and two [SEP], got {max_length}")
        if isinstance(queries, str) or isinstance(documents, str):
            raise TypeError("tokenize_pairs takes sequences of strings; wrap single texts in lists")
        if len(queries) != len(documents):
            raise ValueError(f"got {len(queries)} queries but {len(documents)} documents; "
                             "pairs need one of each")
        query_budget = max_length - 3 if query_max_length is None else min(query_max_length,
                                                                            max_length - 3)
        query_pieces = self._tok.encode_batch(list(queries), add_special_tokens=False)
        doc_pieces = self._tok.encode_batch(list(documents), add_special_tokens=False)
        out = []
        for q_enc, d_enc in zip(query_pieces, doc_pieces):
            q = q_enc.ids[:query_budget]
            d = d_enc.ids[: max_length - 3 - len(q)]
            ids = np.asarray([self.cls_id, *q, self.sep_id, *d, self.sep_id], dtype=np.int32)
            types = np.zeros(len(ids), dtype=np.int32)
            types[len(q) + 2:] = 1
            out.append((ids, types))
        return out

    def encode(
        self, texts: Sequence[str], max_length: int, pad_to: int | None = None
    ) -> TokenizedBatch:
        """Tokenizes and right-pads to the longest text (or to `pad_to`)."""
        return pad_sequences(self.tokenize(texts, max_length), self.pad_id, pad_to)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)


def _do_lower_case(directory: Path) -> bool:
    """Reads do_lower_case from tokenizer_config.json; uncased is BERT's default."""
    config = directory / "tokenizer_config.json"
    if config.exists():
        return bool(json.loads(config.read_text()).get("do_lower_case", True))
    return True


def default_t5_spiece_path() -> Path:
    """Finds T5's spiece.model under $IRJAX_ASSETS_DIR, next to $IRJAX_DATA_DIR (the shared
    layout keeps data/ and assets/ side by side), or in the repo's sibling ../shared/assets."""
    candidates = []
    if os.environ.get("IRJAX_ASSETS_DIR"):
        candidates.append(Path(os.environ["IRJAX_ASSETS_DIR"]) / "t5" / "spiece.model")
    if os.environ.get("IRJAX_DATA_DIR"):
        candidates.append(Path(os.environ["IRJAX_DATA_DIR"]).resolve().parent / "assets" / "t5"
                          / "spiece.model")
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "assets" / "t5" / "spiece.model")
    for path in candidates:
        if path.exists():
            return path
    raise MissingFileError(
        "T5 spiece.model not found at " + ", ".join(map(str, candidates))
        + "; set IRJAX_ASSETS_DIR to the folder that holds t5/spiece.model"
    )


class SentencePieceTokenizer:
    """T5's SentencePiece vocabulary: pad id 0, EOS id 1 appended to every sequence."""

    pad_id = 0
    eos_id = 1

    def __init__(self, model_path: str | os.PathLike | None = None):
        import sentencepiece as spm

        path = Path(model_path) if model_path is not None else default_t5_spiece_path()
        if not path.exists():
            raise MissingFileError(f"SentencePiece model {path} does not exist")
        self._sp = spm.SentencePieceProcessor(model_file=str(path))
        self.path = path
        if self._sp.pad_id() != self.pad_id or self._sp.eos_id() != self.eos_id:
            raise ValueError(
                f"{path} has pad={self._sp.pad_id()} eos={self._sp.eos_id()}; T5 models here "
                "assume pad=0 and eos=1"
            )
        self.vocab_size = int(self._sp.get_piece_size())

    def tokenize(self, texts: Sequence[str], max_length: int, add_eos: bool = True) -> list[np.ndarray]:
        """Piece ids per text, truncated so that with EOS the total is at most `max_length`."""
        if isinstance(texts, str):
            raise TypeError("tokenize takes a sequence of strings; wrap a single text in a list")
        keep = max_length - 1 if add_eos else max_length
        if keep < 0:
            raise ValueError(f"max_length must be >= 1 to hold EOS, got {max_length}")
        out = []
        for pieces in self._sp.encode(list(texts), out_type=int):
            pieces = pieces[:keep] + ([self.eos_id] if add_eos else [])
            out.append(np.asarray(pieces, dtype=np.int32))
        return out

    def encode(
        self,
        texts: Sequence[str],
        max_length: int,
        pad_to: int | None = None,
        add_eos: bool = True,
    ) -> TokenizedBatch:
        return pad_sequences(self.tokenize(texts, max_length, add_eos), self.pad_id, pad_to)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text up to the first EOS; padding is dropped."""
        pieces = []
        for i in np.asarray(ids).tolist():
            if i == self.eos_id:
                break
            if i != self.pad_id:
                pieces.append(int(i))
        return self._sp.decode(pieces)

    def decode_batch(self, ids: np.ndarray) -> list[str]:
        return [self.decode(row) for row in np.asarray(ids)]
