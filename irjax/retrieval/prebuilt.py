"""A retriever over an index that was built elsewhere: a query encoder plus a finished `Index`.

JPQ's and BEBR's indexes are not built from corpus vectors by `create_index` (JPQ's centroids are
trained, BEBR's bits come from a trained binariser), so `DenseRetriever` cannot build them; this
retriever only encodes queries and searches, and times both for metrics.json.
"""
from __future__ import annotations

import time
from typing import Any

from irjax.data.collection import Collection
from irjax.data.runs import Run
from irjax.index.base import Index
from irjax.retrieval.distributed import to_run


class PrebuiltIndexRetriever:
    """`query_encoder.encode(texts)` -> vectors -> `index.search` (the index covers the corpus)."""

    def __init__(self, query_encoder: Any, index: Index, name: str,
                 build_seconds: float | None = None) -> None:
        self.query_encoder, self.index, self.name = query_encoder, index, name
        self.timings: dict[str, float] = {}
        if build_seconds is not None:
            self.timings["index_build_s"] = build_seconds

    def retrieve(self, collection: Collection, queries: dict[str, str], k: int) -> Run:
        if self.index.ids != list(collection.doc_ids):
            raise ValueError(f"the {self.index.kind} index holds {len(self.index)} documents that "
                             f"are not {collection.name}'s corpus in order; build it over this "
                             "collection's documents")
        texts = list(queries.values())
        start = time.perf_counter()
        vectors = self.query_encoder.encode(texts)
        self.timings["encode_queries_s"] = time.perf_counter() - start
        start = time.perf_counter()
        result = self.index.search(vectors, min(k, len(self.index)))
        self.timings["search_s"] = time.perf_counter() - start
        self.timings["search_queries_per_s"] = len(texts) / max(self.timings["search_s"], 1e-9)
        return to_run(list(queries), result.scores, result.indices, collection.doc_ids)
