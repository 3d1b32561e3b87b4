"""AR2 training batches: the dual encoder's batches plus every row's group as joined pairs.

AR2's two players must see the same candidates, so one batch carries both views of each row's
group (its positive, then its n negatives): the separate query and document tokens the
retriever embeds (`DualEncoderBatches`' layout) and the `[CLS] q [SEP] d [SEP]` pairs the ranker
reads (`pair_ids`, `pair_types`, `pair_mask` int32 [b, 1+n, pair_max_length]).

The negatives change every re-indexing round (a new instance per round), but the batch plan does
not restart: round r's step i is global step `step_offset + i`, so the queries and the epoch
order continue across rounds exactly as one long run would have them.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from irjax.data.pipeline import DualEncoderBatches
from irjax.data.tokenization import WordPieceTokenizer, pad_sequences
from irjax.data.training_examples import TrainingPair


class AR2Batches(DualEncoderBatches):
    """`DualEncoderBatches` (with `num_hard_negatives` >= 1 retrieved negatives) + pair tokens."""

    kind = "ar2"

    def __init__(self, pairs: Sequence[TrainingPair], tokenizer: WordPieceTokenizer,
                 global_batch_size: int, *, pair_max_length: int = 256,
                 step_offset: int = 0, **options: Any):
        if options.get("num_hard_negatives", 0) < 1:
            raise ValueError("AR2 groups need num_hard_negatives >= 1 (the retrieved negatives "
                             "both players are trained on)")
        if step_offset < 0:
            raise ValueError(f"step_offset={step_offset} must be >= 0")
        super().__init__(pairs, tokenizer, global_batch_size, **options)
        self.pair_max_length, self.step_offset = pair_max_length, step_offset
        self.fingerprint = hashlib.sha256(
            f"{self.kind}:{pair_max_length}:{step_offset}:{self.fingerprint}".encode()).hexdigest()

    def global_rows(self, step: int) -> dict[str, np.ndarray]:
        return super().global_rows(step + self.step_offset)

    def materialize(self, rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = super().materialize(rows)
        queries = batch["query_index"].tolist()
        docs = np.concatenate([batch["pos_doc_index"][:, None], batch["neg_doc_index"]], axis=1)
        b, groups = docs.shape
        pairs = self.tokenizer.tokenize_pairs(
            [self.query_texts[q] for q in queries for _ in range(groups)],
            [self.doc_texts[d] for d in docs.reshape(-1).tolist()],
            self.pair_max_length, self.query_max_length)
        ids = pad_sequences([p[0] for p in pairs], self.tokenizer.pad_id,
                            pad_to=self.pair_max_length)
        types = pad_sequences([p[1] for p in pairs], 0, pad_to=self.pair_max_length)
        shape = (b, groups, self.pair_max_length)
        batch.update(pair_ids=ids.ids.reshape(shape), pair_types=types.ids.reshape(shape),
                     pair_mask=ids.mask.reshape(shape))
        return batch
