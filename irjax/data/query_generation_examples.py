"""Document -> query examples for training a query generator (docT5query), from the judged-relevant
pairs of a split, with a held-out slice of queries to measure how well it generalises.

Each (query, document) judgment with grade > 0 gives one example: inputs = the document's text
(title + text; the seq2seq pipeline truncates it), targets = the query's SentencePiece pieces cut
to `targets_max_length - 1`, then EOS. Unlike docids, a cut query is still a fine target, so
long queries are truncated (counted) rather than rejected.

The held-out slice is split *by query* (all judgments of a held-out query leave training), seeded,
so its loss measures queries the model has never seen, not other documents of known queries.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from irjax.data.collection import Collection
from irjax.data.dsi_examples import Seq2SeqExample
from irjax.data.tokenization import SentencePieceTokenizer

QUERY_GENERATION_KIND = "query_generation"


@dataclasses.dataclass(frozen=True)
class QueryGenerationData:
    """Training and held-out examples, the held-out query ids, and what was skipped or cut."""

    train: list[Seq2SeqExample]
    heldout: list[Seq2SeqExample]
    heldout_query_ids: list[str]
    counts: dict[str, int]

    def summary(self) -> dict[str, int]:
        return {"train_pairs": len(self.train), "heldout_pairs": len(self.heldout),
                "heldout_queries": len(self.heldout_query_ids), **self.counts}


def heldout_queries(query_ids: list[str], fraction: float, seed: int) -> list[str]:
    """A seeded `fraction` of `query_ids` (rounded; at least one when fraction > 0 and there are
    two or more queries, and never all of them)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {fraction}")
    if fraction == 0 or len(query_ids) < 2:
        return []
    count = min(len(query_ids) - 1, max(1, round(fraction * len(query_ids))))
    order = np.random.default_rng(seed).permutation(len(query_ids))
    return sorted(query_ids[i] for i in order[:count])


def query_generation_examples(collection: Collection, tokenizer: SentencePieceTokenizer, *,
                              targets_max_length: int = 32, heldout_fraction: float = 0.05,
                              seed: int = 0) -> QueryGenerationData:
    """Document -> query examples of every judgment with grade > 0 (module docstring)."""
    if targets_max_length < 2:
        raise ValueError("targets_max_length must be >= 2 (a piece and EOS), got "
                         f"{targets_max_length}")
    documents = {d.doc_id: d.contents for d in collection.documents}
    counts = {"non_positive_judgments_skipped": 0, "empty_documents_skipped": 0,
              "blank_queries_skipped": 0, "truncated_targets": 0}
    pairs: list[tuple[str, str, str]] = []  # (query id, doc id, query text)
    for qid, query in collection.eval_queries().items():
        if not query.strip():
            counts["blank_queries_skipped"] += len(collection.qrels[qid])
            continue
        for doc_id, grade in collection.qrels[qid].items():
            if grade <= 0:
                counts["non_positive_judgments_skipped"] += 1
            elif not documents[doc_id].strip():
                counts["empty_documents_skipped"] += 1
            else:
                pairs.append((qid, doc_id, query))
    if not pairs:
        raise ValueError(f"{collection.path} ({collection.split}): no judgment with grade > 0 "
                         f"between a non-blank query and a non-empty document ({counts})")
    query_ids = sorted({qid for qid, _, _ in pairs})
    heldout = set(heldout_queries(query_ids, heldout_fraction, seed))
    pieces = tokenizer.tokenize([q for _, _, q in pairs], 10**9, add_eos=False)
    keep = targets_max_length - 1
    train, held = [], []
    for (qid, doc_id, _), query_pieces in zip(pairs, pieces):
        counts["truncated_targets"] += len(query_pieces) > keep
        target = tuple(int(t) for t in query_pieces[:keep]) + (tokenizer.eos_id,)
        example = Seq2SeqExample(QUERY_GENERATION_KIND, qid, doc_id, documents[doc_id], target)
        (held if qid in heldout else train).append(example)
    return QueryGenerationData(train, held, sorted(heldout), counts)

