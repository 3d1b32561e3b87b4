"""Cross-encoder training groups: one query, its positive and n hard negatives, as joined pairs.

The batch plan is the dual encoder's (`DualEncoderBatches`: the same pairs, epochs, sampler,
negatives drawn per step from the query's mined candidates, resumable state), so a cross-encoder
and a dual encoder trained with the same DataConfig see the same queries, positives and
negatives in the same order. Only `materialize` differs: instead of separate query and document
rows, each row is a group of 1+n `[CLS] query [SEP] document [SEP]` pairs, positive first
(layout in irjax/models/cross_encoder_training.py):

    pair_ids, pair_types, pair_mask   int32 [b, 1+n, max_length]
    query_index                       int32 [b]
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from irjax.data.pipeline import DualEncoderBatches
from irjax.data.tokenization import WordPieceTokenizer, pad_sequences
from irjax.data.training_examples import TrainingPair


class CrossEncoderBatches(DualEncoderBatches):
    """Groups of (positive + `num_hard_negatives`) pairs; `max_length` bounds a whole pair, of
    which the query keeps at most `query_max_length` pieces (the document is cut first)."""

    kind = "cross_encoder"

    def __init__(self, pairs: Sequence[TrainingPair], tokenizer: WordPieceTokenizer,
                 global_batch_size: int, *, max_length: int = 256, query_max_length: int = 64,
                 num_hard_negatives: int = 7, **options: Any):
        if num_hard_negatives < 1:
            raise ValueError("a cross-encoder group needs num_hard_negatives >= 1 (the localized "
                             "contrastive loss compares the positive with its negatives)")
        if options.get("teacher") is not None:
            raise ValueError("cross-encoder groups take no teacher scores; the loss is contrastive")
        super().__init__(pairs, tokenizer, global_batch_size, query_max_length=query_max_length,
                         doc_max_length=max_length, num_hard_negatives=num_hard_negatives,
                         **options)
        self.max_length = max_length
        self.fingerprint = hashlib.sha256(f"{self.kind}:{self.fingerprint}".encode()).hexdigest()

    def materialize(self, rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """This process's groups, tokenized as pairs and padded to `max_length`."""
        local = rows["pairs"][self.shard]
        negatives = rows["negatives"][self.shard]
        queries = self.pair_query[local]
        docs = np.concatenate([self.pair_doc[local][:, None], negatives], axis=1)  # [b, G]
        b, groups = docs.shape
        query_texts = [self.query_texts[q] for q in queries.tolist() for _ in range(groups)]
        doc_texts = [self.doc_texts[d] for d in docs.reshape(-1).tolist()]
        pairs = self.tokenizer.tokenize_pairs(query_texts, doc_texts, self.max_length,
                                              self.query_max_length)
        ids = pad_sequences([p[0] for p in pairs], self.tokenizer.pad_id, pad_to=self.max_length)
        types = pad_sequences([p[1] for p in pairs], 0, pad_to=self.max_length)
        shape = (b, groups, self.max_length)
        return {"pair_ids": ids.ids.reshape(shape), "pair_types": types.ids.reshape(shape),
                "pair_mask": ids.mask.reshape(shape), "query_index": queries.astype(np.int32)}
