"""Multi-vector inference through indexes: XTR over a token index, and MUVERA over FDEs.

Both reuse the token vectors a `MaxSimRetriever` encoded (`corpus_vectors`), so every inference
path of one trained model is evaluated on the same encoding:

- `XtrIndexRetriever`: every query token searches a `TokenIndex` (ScaNN or exact) for its top-k'
  corpus tokens; the owning documents are the candidates. `scoring='xtr'` scores them from the
  retrieved similarities alone, imputing missing ones (`xtr_score_candidates`);
  `scoring='maxsim'` loads the candidates' token vectors and runs exhaustive MaxSim over exactly
  the same candidates (the ColBERT-style reference). The token search is cached, so evaluating
  both scorings costs one search, and each records its scoring time and FLOPs in `cost`.
- `MuveraRetriever`: query and document fixed-dimensional encodings (SimHash partitions,
  repetitions, optional final projection; `irjax.index.fde`) searched as single vectors, then
  the top `num_candidates` reranked by exact MaxSim.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Sequence

import numpy as np

from irjax.data.collection import Collection
from irjax.retrieval.multi_vector import MaxSimRetriever
from irjax.data.runs import Run
from irjax.index.base import Index, create_index
from irjax.index.fde import FDEConfig, encode_document_fdes, encode_query_fdes
from irjax.index.token_index import TokenIndex
from irjax.index.xtr_scoring import (maxsim_flops, maxsim_rerank, xtr_score_candidates,
                                     xtr_scoring_flops)

log = logging.getLogger(__name__)

SCORINGS = ("xtr", "maxsim")


def _query_key(collection: Collection, queries: dict[str, str]) -> tuple[str, tuple[str, ...]]:
    return collection.fingerprint(), tuple(queries)


def _top_k(candidates: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")[:k]
    return candidates[order], scores[order]


def _to_run(doc_ids: Sequence[str], query_ids: Sequence[str],
            ranked: list[tuple[np.ndarray, np.ndarray]]) -> Run:
    return {qid: {doc_ids[int(d)]: float(s) for d, s in zip(docs, scores)}
            for qid, (docs, scores) in zip(query_ids, ranked)}


@dataclasses.dataclass
class TokenSearch:
    """Per query: the top-k' token scores and owning doc indices [n_q, k'], best first."""

    scores: list[np.ndarray]
    docs: list[np.ndarray]
    query_vectors: list[np.ndarray]
    seconds: float


class XtrIndexRetriever:
    """XTR token retrieval through a `TokenIndex`; see the module docstring."""

    def __init__(self, base: MaxSimRetriever, k_prime: int = 1024, index_kind: str = "scann",
                 dtype: str = "float32", scoring: str = "xtr", chunk_docs: int = 512,
                 index_options: dict[str, Any] | None = None, name: str | None = None):
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        self.base = base
        self.k_prime = k_prime
        self.index_kind = index_kind
        self.dtype = dtype
        self.scoring = scoring
        self.chunk_docs = chunk_docs
        self.index_options = dict(index_options or {})
        self.name = name or f"{base.name.split('+')[0]}+xtr-{index_kind}+{scoring}"
        self.timings: dict[str, float] = {}
        self.cost: dict[str, float] = {}
        self._indexes: dict[str, TokenIndex] = {}
        self._searches: dict[tuple, TokenSearch] = {}

    def scored_by(self, scoring: str, name: str | None = None) -> "XtrIndexRetriever":
        """The same index and cached token search, scored the other way."""
        view = XtrIndexRetriever(self.base, self.k_prime, self.index_kind, self.dtype, scoring,
                                 self.chunk_docs, self.index_options, name)
        view._indexes, view._searches = self._indexes, self._searches
        return view

    def token_index(self, collection: Collection) -> TokenIndex:
        """The collection's token index, built once by streaming the encoded docs in chunks."""
        key = collection.fingerprint()
        if key not in self._indexes:
            docs = self.base.corpus_vectors(collection)
            ids = collection.doc_ids
            keep = [i for i, d in enumerate(docs) if len(d)]
            if len(keep) < len(docs):
                log.warning("%d documents have no scoring tokens and cannot be retrieved",
                            len(docs) - len(keep))
            chunks = ((([ids[i] for i in keep[s:s + self.chunk_docs]]),
                       [docs[i] for i in keep[s:s + self.chunk_docs]])
                      for s in range(0, len(keep), self.chunk_docs))
            start = time.perf_counter()
            self._indexes[key] = TokenIndex.build_streaming(chunks, kind=self.index_kind,
                                                            dtype=self.dtype, **self.index_options)
            self.timings["build_token_index_s"] = time.perf_counter() - start
            log.info("built %r in %.1f s", self._indexes[key], self.timings["build_token_index_s"])
        return self._indexes[key]

    def search(self, collection: Collection, queries: dict[str, str]) -> TokenSearch:
        key = _query_key(collection, queries)
        if key not in self._searches:
            index = self.token_index(collection)
            vectors = self.base.query_vectors(queries)
            k_prime = min(self.k_prime, index.num_tokens)
            start = time.perf_counter()
            flat = np.concatenate([np.zeros((0, index.dim), np.float32), *vectors])
            scores, docs = index.search_tokens(flat, k_prime)     # one batched search
            bounds = np.cumsum([0] + [len(v) for v in vectors])
            self._searches[key] = TokenSearch(
                [scores[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
                [docs[a:b] for a, b in zip(bounds[:-1], bounds[1:])], vectors,
                time.perf_counter() - start)
        return self._searches[key]

    def retrieve(self, collection: Collection, queries: dict[str, str], k: int) -> Run:
        search = self.search(collection, queries)
        index = self.token_index(collection)
        # Map token-index doc positions back to collection positions (empty docs were skipped).
        position = {doc_id: i for i, doc_id in enumerate(collection.doc_ids)}
        to_collection = np.array([position[d] for d in index.doc_ids], np.int64)
        docs = self.base.corpus_vectors(collection)
        ranked: list[tuple[np.ndarray, np.ndarray]] = []
        seconds, flops, candidates_total = 0.0, 0, 0
        per_query: list[float] = []
        for q, sims, hits in zip(search.query_vectors, search.scores, search.docs):
            if len(q) == 0:
                ranked.append((np.zeros(0, np.int64), np.zeros(0)))
                continue
            start = time.perf_counter()
            candidates, scores = xtr_score_candidates(sims, hits)
            if self.scoring == "maxsim":
                scores = maxsim_rerank(q, [docs[to_collection[c]] for c in candidates],
                                       dtype=np.float32)
            per_query.append(time.perf_counter() - start)
            seconds += per_query[-1]
            candidates_total += len(candidates)
            flops += (xtr_scoring_flops(len(q), sims.shape[1], len(candidates))
                      if self.scoring == "xtr" else
                      maxsim_flops(len(q), [len(docs[to_collection[c]]) for c in candidates],
                                   q.shape[1]))
            ranked.append(_top_k(to_collection[candidates], scores, k))
        n = max(1, len(queries))
        self.timings.update(token_search_s=search.seconds, score_s=seconds)
        self.cost = {"scoring": self.scoring, "k_prime": int(search.scores[0].shape[1])
                     if search.scores else 0, "scoring_seconds": seconds,
                     "scoring_ms_per_query": 1000 * seconds / n,
                     "scoring_ms_median": 1000 * float(np.median(per_query)) if per_query else 0.0,
                     "scoring_flops": float(flops),
                     "scoring_flops_per_query": flops / n,
                     "candidates_per_query": candidates_total / n,
                     "token_search_seconds": search.seconds}
        return _to_run(collection.doc_ids, list(queries), ranked)


class MuveraRetriever:
    """MUVERA: single-vector search over FDEs, then exact MaxSim on the top candidates."""

    def __init__(self, base: MaxSimRetriever, fde: FDEConfig | None = None,
                 num_candidates: int = 100, index_kind: str = "exact", name: str | None = None):
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        self.base = base
        self.fde = fde or default_fde_config(base.model.dim)
        self.num_candidates = num_candidates
        self.index_kind = index_kind
        self.name = name or f"{base.name.split('+')[0]}+muvera-{num_candidates}"
        self.timings: dict[str, float] = {}
        self._indexes: dict[str, Index] = {}

    def fde_index(self, collection: Collection) -> Index:
        key = collection.fingerprint()
        if key not in self._indexes:
            docs = self.base.corpus_vectors(collection)
            start = time.perf_counter()
            vectors = encode_document_fdes(
                [d if len(d) else np.zeros((1, self.fde.dim), np.float32) for d in docs],
                self.fde).astype(np.float32)
            self.timings["encode_document_fdes_s"] = time.perf_counter() - start
            self._indexes[key] = create_index(self.index_kind).build(vectors, collection.doc_ids)
        return self._indexes[key]

    def candidates(self, collection: Collection, queries: dict[str, str],
                   num: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(query token vectors, FDE-ranked candidate doc positions [num]) per query."""
        index = self.fde_index(collection)
        vectors = self.base.query_vectors(queries)
        start = time.perf_counter()
        q_fde = encode_query_fdes(vectors, self.fde).astype(np.float32)
        result = index.search(q_fde, min(num, len(index)))
        self.timings["fde_search_s"] = time.perf_counter() - start
        return vectors, [row[row >= 0] for row in np.asarray(result.indices)]

    def retrieve(self, collection: Collection, queries: dict[str, str], k: int) -> Run:
        vectors, candidates = self.candidates(collection, queries, self.num_candidates)
        docs = self.base.corpus_vectors(collection)
        start = time.perf_counter()
        ranked = []
        for q, cand in zip(vectors, candidates):
            if len(q) == 0 or len(cand) == 0:
                ranked.append((np.zeros(0, np.int64), np.zeros(0)))
                continue
            scores = maxsim_rerank(q, [docs[c] if len(docs[c]) else np.zeros((1, q.shape[1]))
                                       for c in cand], dtype=np.float32)
            ranked.append(_top_k(cand, scores, k))
        self.timings["rerank_s"] = time.perf_counter() - start
        return _to_run(collection.doc_ids, list(queries), ranked)


def default_fde_config(dim: int) -> FDEConfig:
    """MUVERA's recommended shape: 20 repetitions x 2^5 SimHash partitions x 8-d projections
    (5,120 dims), empty document partitions filled."""
    return FDEConfig(dim=dim, num_repetitions=20, num_simhash_projections=5, projection_dim=8)
