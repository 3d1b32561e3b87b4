"""Dense retrieval: encode the corpus (cached on disk), build an index, encode queries, search."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from irjax.data.collection import Collection
from irjax.data.runs import Run
from irjax.choices import check_choice
from irjax.index.base import Index, available_kinds, create_index
from irjax.index.embedding_cache import cache_key, cached_embeddings

log = logging.getLogger(__name__)


class DenseRetriever:
    """Encodes the corpus (cached on disk), builds an index, encodes queries, searches.

    `encoder` embeds documents (and queries, unless a separate `query_encoder` is given).
    """

    def __init__(
        self,
        encoder: Any,
        index: str = "exact",
        index_options: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        save_index_to: str | None = None,
        name: str | None = None,
        index_factory: Callable[..., Index] = create_index,
        query_encoder: Any = None,
        warm_queries: bool = False,
    ):
        if index_factory is create_index:  # a custom factory may know other kinds
            check_choice("DenseRetriever.index", index, available_kinds())
            try:  # constructing an unbuilt index is cheap and checks its options now, not later
                create_index(index, **(index_options or {}))
            except (TypeError, ValueError) as e:
                raise ValueError(f"DenseRetriever.index_options={index_options!r} for a {index!r} "
                                 f"index: {e}") from e
        self.encoder = encoder
        self.query_encoder = query_encoder or encoder  # separate towers: a different query encoder
        self.index_kind = index
        self.index_options = dict(index_options or {})
        self.cache_dir = cache_dir
        self.save_index_to = save_index_to
        self.name = name or f"{encoder.name}+{index}"
        self.index_factory = index_factory
        self.timings: dict[str, float] = {}
        # Encode the queries once untimed first, for throughput comparisons (costs a second pass).
        self.warm_queries = warm_queries

    def encode_corpus(self, collection: Collection) -> np.ndarray:
        key = cache_key(model=self.encoder.fingerprint, corpus=collection.fingerprint())
        texts = [d.contents for d in collection.documents]
        return cached_embeddings(
            self.cache_dir, key, collection.doc_ids,
            lambda: self.encoder.encode(texts, progress=f"encoding {collection.name} corpus"),
        )

    def retrieve(self, collection: Collection, queries: dict[str, str], k: int) -> Run:
        start = time.perf_counter()
        doc_vectors = self.encode_corpus(collection)
        self.timings["encode_corpus_s"] = time.perf_counter() - start
        start = time.perf_counter()
        log.info("building %s index over %d vectors", self.index_kind, len(doc_vectors))
        index = self.index_factory(self.index_kind, **self.index_options).build(doc_vectors, collection.doc_ids)
        self.timings["index_build_s"] = time.perf_counter() - start
        if self.save_index_to:
            index.save(Path(self.save_index_to))
        texts = list(queries.values())
        if self.warm_queries:  # compiles every length bucket, so the timing below is query time
            start = time.perf_counter()
            self.query_encoder.encode(texts)
            self.timings["compile_queries_s"] = time.perf_counter() - start
        start = time.perf_counter()
        query_vectors = self.query_encoder.encode(texts, progress="encoding queries")
        self.timings["encode_queries_s"] = time.perf_counter() - start
        start = time.perf_counter()
        result = index.search(query_vectors, k)
        self.timings["search_s"] = time.perf_counter() - start
        return result.to_run(list(queries))
