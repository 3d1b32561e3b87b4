"""Naive string docids (DSI): the document's own id string, spelled in T5 SentencePiece pieces.

No new tokens are needed, and ids that share digits share pieces (SciFact's "4983" is
['▁49', '83']), which gives the decoder some arbitrary but learnable structure. SentencePiece
normalises text (e.g. collapses whitespace), so two distinct id strings can spell the same pieces;
building refuses such a collection rather than merging two documents into one docid.
"""
from __future__ import annotations

from irjax.data.docids.base import (T5_BASE_VOCAB_SIZE, DocIds, DocidError, DocidScheme,
                                    resolve_doc_ids)
from irjax.data.tokenization import SentencePieceTokenizer
from irjax.files import sha256_file


class NaiveStringDocids(DocidScheme):
    """Document id string -> its SentencePiece ids (no EOS); `num_new_tokens` is 0."""

    name = "naive_string"

    @classmethod
    def build(cls, collection_or_doc_ids: DocIds, *, tokenizer: SentencePieceTokenizer | None = None,
              max_length: int = 32, base_vocab_size: int = T5_BASE_VOCAB_SIZE) -> "NaiveStringDocids":
        """`max_length` caps the pieces per docid; a longer id is an error, not a truncation,
        because truncated docids would collide or decode to the wrong document."""
        doc_ids = resolve_doc_ids(collection_or_doc_ids)
        tokenizer = tokenizer if tokenizer is not None else SentencePieceTokenizer()
        if tokenizer.vocab_size > base_vocab_size:
            raise DocidError(f"the SentencePiece vocabulary ({tokenizer.vocab_size} pieces) does not "
                             f"fit in base_vocab_size={base_vocab_size}")
        pieces = tokenizer.tokenize(doc_ids, max_length + 1, add_eos=False)
        docids: list[tuple[int, ...]] = []
        first: dict[tuple[int, ...], str] = {}
        for doc_id, ids in zip(doc_ids, pieces):
            docid = tuple(int(t) for t in ids)
            if len(docid) > max_length:
                raise DocidError(f"document id {doc_id!r} needs more than max_length={max_length} "
                                 "SentencePiece tokens; raise max_length or use another scheme")
            if not docid:
                raise DocidError(f"document id {doc_id!r} tokenizes to no pieces")
            if docid in first:
                raise DocidError(f"document ids {first[docid]!r} and {doc_id!r} tokenize to the same "
                                 f"pieces {list(docid)}; naive string docids need distinct spellings, "
                                 "use atomic or semantic docids for this collection")
            first[docid] = doc_id
            docids.append(docid)
        config = {"spiece_model": tokenizer.path.name, "spiece_sha256": sha256_file(tokenizer.path),
                  "max_length": max_length}
        lengths = [len(d) for d in docids]
        return cls(doc_ids, docids, base_vocab_size=base_vocab_size, num_new_tokens=0, config=config,
                   stats={"max_depth": max(lengths), "mean_depth": round(sum(lengths) / len(lengths), 3)})
