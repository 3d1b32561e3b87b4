"""Atomic docids (DSI, Tay et al. 2022): one new output token per document.

Decoding is a single softmax over the documents, so the model cannot share anything between
documents through the docid; the output layer grows by one row per document. Token ids run
contiguously from `base_vocab_size` in corpus order: document i decodes to `base_vocab_size + i`.
"""
from __future__ import annotations

from irjax.data.docids.base import T5_BASE_VOCAB_SIZE, DocIds, DocidScheme, resolve_doc_ids


class AtomicDocids(DocidScheme):
    """Document i of the corpus -> the single token `base_vocab_size + i`."""

    name = "atomic"

    @classmethod
    def build(cls, collection_or_doc_ids: DocIds, *,
              base_vocab_size: int = T5_BASE_VOCAB_SIZE) -> "AtomicDocids":
        doc_ids = resolve_doc_ids(collection_or_doc_ids)
        docids = [(base_vocab_size + i,) for i in range(len(doc_ids))]
        return cls(doc_ids, docids, base_vocab_size=base_vocab_size, num_new_tokens=len(doc_ids),
                   config={}, stats={"max_depth": 1})
