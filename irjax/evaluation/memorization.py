"""Memorization probes for generative retrieval: does the model still decode a document's own
docid from the document's indexing text? Continual indexing (DSI++, Mehta et al. 2023) measures
forgetting this way: Hits@k of old documents before and after indexing new ones.

The probe input is exactly the indexing example's input (the document's title + text, truncated
by the retriever's tokenizer to `inputs_max_length`), so Hits@1 is the model's accuracy on its own
indexing task. Each document's rank is kept, so aggregate numbers can be recomputed from the file.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from irjax.data.collection import Document

log = logging.getLogger(__name__)


class Ranker(Protocol):
    """What a probe needs: `GenerativeRetriever.rank` (texts -> ranked (doc id, score) lists)."""

    beam_size: int

    def rank(self, texts: list[str]) -> list[list[tuple[str, float]]]: ...


@dataclasses.dataclass(frozen=True)
class MemorizationResult:
    """Hits@k over the probed documents and each document's 1-based rank (None: not decoded)."""

    hits: dict[int, float]
    ranks: dict[str, int | None]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"num_documents": len(self.ranks),
                "hits": {f"Hits@{k}": v for k, v in self.hits.items()},
                "seconds": round(self.seconds, 2), "ranks": self.ranks}


def hits_at(ranks: Sequence[int | None], k: int) -> float:
    """Share of probes whose own docid is among the top k (0.0 for no probes)."""
    if not ranks:
        return 0.0
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks)


def probe_documents(documents: Sequence[Document], size: int | None, seed: int) -> list[Document]:
    """The documents to probe: those with text (an empty one has no indexing example), all of
    them or a seeded sample of `size`, in corpus order so every phase probes the same ones."""
    usable = [d for d in documents if d.contents.strip()]
    if size is None or size >= len(usable):
        return usable
    if size < 1:
        raise ValueError(f"memorization sample size must be >= 1 or None (all), got {size}")
    chosen = np.sort(np.random.default_rng(seed).choice(len(usable), size, replace=False))
    return [usable[i] for i in chosen.tolist()]


def memorization_probe(ranker: Ranker, documents: Sequence[Document],
                       ks: Sequence[int] = (1, 10)) -> MemorizationResult:
    """Ranks each document's indexing text and records where its own docid lands."""
    if any(k > ranker.beam_size for k in ks):
        log.warning("Hits@%d with beam size %d counts only the top %d docids", max(ks),
                    ranker.beam_size, ranker.beam_size)
    start = time.perf_counter()
    ranked = ranker.rank([d.contents for d in documents]) if documents else []
    seconds = time.perf_counter() - start
    ranks: dict[str, int | None] = {}
    for doc, results in zip(documents, ranked):
        ids = [doc_id for doc_id, _ in results]
        ranks[doc.doc_id] = ids.index(doc.doc_id) + 1 if doc.doc_id in ids else None
    values = list(ranks.values())
    return MemorizationResult({k: hits_at(values, k) for k in ks}, ranks, seconds)
