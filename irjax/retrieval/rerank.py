"""A second stage behind any first stage: first stage -> top `depth` -> reranker -> run.

`RerankingRetriever` is itself a `Retriever`, so `evaluate_on_collection` scores a reranked run
like any other and a gin config swaps either stage. A `Reranker` sees each query's candidates with
their first-stage scores (a `Run`) and the documents' texts, and returns new scores for them;
batching across queries (cross-encoders) or windows within one query (listwise LMs) is its own
business. Its `costs` (totals of the last call: model calls, LM tokens, FLOPs) are divided by the
number of queries into metrics.json's timings, beside each stage's seconds and ms per query, so a
method's added cost sits next to the effectiveness it buys. The first stage's corpus-side work
(BM25 indexing, corpus encoding, index building: `CORPUS_SIDE_TIMINGS` of its own timings) is
reported apart, as `first_stage_corpus_s`, and left out of `first_stage_ms_per_query`.
"""
from __future__ import annotations

import time
from typing import Iterable, Mapping, Protocol, Sequence

import numpy as np

from irjax.data.collection import Collection
from irjax.data.runs import Run, rank_documents
from irjax.retrieval.base import Retriever
from irjax.retrieval.fusion import min_max_normalised


# Timings a first stage reports for work done once per corpus, not per query.
CORPUS_SIDE_TIMINGS = ("index_s", "encode_corpus_s", "index_build_s")


def query_side_seconds(total_s: float, first_stage: Retriever) -> tuple[float, float]:
    """(query-side seconds, corpus-side seconds) of a first-stage call that took `total_s`."""
    timings = getattr(first_stage, "timings", {})
    corpus_s = min(sum(float(timings.get(key, 0.0)) for key in CORPUS_SIDE_TIMINGS), total_s)
    return total_s - corpus_s, corpus_s


class Reranker(Protocol):
    name: str
    costs: dict[str, float]

    def rerank(self, queries: Mapping[str, str], candidates: Run,
               documents: Mapping[str, str]) -> Run:
        """New scores for every candidate of every query (higher first)."""
        ...


class IdentityReranker:
    """Gives back the first stage's scores: the control that isolates the reranking plumbing."""

    name = "identity"

    def __init__(self) -> None:
        self.costs: dict[str, float] = {}

    def rerank(self, queries: Mapping[str, str], candidates: Run,
               documents: Mapping[str, str]) -> Run:
        return {qid: dict(scores) for qid, scores in candidates.items()}


class PairScorer(Protocol):
    """Scores (query, document) pairs independently: a cross-encoder, or any pointwise model."""
    name: str

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray: ...


class PairwiseReranker:
    """A Reranker from a PairScorer: every candidate of every query scored on its own, in
    batches of `batch_size` pairs across queries. costs: `model_calls` (pairs scored) plus the
    scorer's own `costs` (e.g. FLOPs), when it keeps any."""

    def __init__(self, scorer: PairScorer, batch_size: int = 64):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.scorer = scorer
        self.batch_size = batch_size
        self.name = scorer.name
        self.costs: dict[str, float] = {}

    def rerank(self, queries: Mapping[str, str], candidates: Run,
               documents: Mapping[str, str]) -> Run:
        pairs = [(qid, doc) for qid, scores in candidates.items() for doc in scores]
        scores = np.zeros(len(pairs), np.float64)
        totals: dict[str, float] = {}
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start:start + self.batch_size]
            scores[start:start + len(chunk)] = self.scorer.score_pairs(
                [queries[q] for q, _ in chunk], [documents[d] for _, d in chunk])
            for key, value in getattr(self.scorer, "costs", {}).items():
                totals[key] = totals.get(key, 0.0) + value
        self.costs = {"model_calls": float(len(pairs)), **totals}
        run: Run = {qid: {} for qid in candidates}
        for (qid, doc), score in zip(pairs, scores):
            run[qid][doc] = float(score)
        return run


class InterpolatedReranker:
    """Another reranker's scores fused with the first stage's: per query, both lists min-max
    normalised over the candidates (irjax/retrieval/fusion.py), then
    `first_stage_weight * first + (1 - first_stage_weight) * reranker`. The usual way to keep
    a strong first stage's signal when the reranker alone is weaker than it (monoBERT with
    BM25, a cross-encoder behind a dense retriever). Costs are the inner reranker's: the first
    stage's scores come with the candidates."""

    def __init__(self, reranker: Reranker, first_stage_weight: float = 0.5):
        if not 0.0 <= first_stage_weight <= 1.0:
            raise ValueError(f"first_stage_weight={first_stage_weight} must be in [0, 1]")
        self.reranker = reranker
        self.first_stage_weight = first_stage_weight
        self.name = f"{reranker.name}+first{first_stage_weight:g}"

    @property
    def costs(self) -> dict[str, float]:
        return getattr(self.reranker, "costs", {})

    def rerank(self, queries: Mapping[str, str], candidates: Run,
               documents: Mapping[str, str]) -> Run:
        reranked = self.reranker.rerank(queries, candidates, documents)
        w = self.first_stage_weight
        fused: Run = {}
        for qid, first_scores in candidates.items():
            first = min_max_normalised(first_scores)
            second = min_max_normalised(reranked.get(qid, {}))
            require_scored(self.reranker.name, qid, first, second)
            fused[qid] = {doc: w * first[doc] + (1.0 - w) * second[doc] for doc in first}
        return fused


def require_scored(reranker: str, qid: str, candidates: Iterable[str],
                   scores: Mapping[str, float]) -> None:
    """Raises when a reranker left some of a query's candidates without a score."""
    missing = [doc for doc in candidates if doc not in scores]
    if missing:
        raise ValueError(f"{reranker} returned no score for query {qid!r}'s candidates "
                         f"{missing[:3]}: a reranker must score every candidate it is given")


def top_candidates(run: Run, depth: int) -> Run:
    """Each query's first `depth` documents in trec_eval order."""
    return {qid: dict(rank_documents(scores)[:depth]) for qid, scores in run.items()}


def merge_reranked(first: Run, reranked: Run, depth: int) -> Run:
    """The reranked top `depth` followed by the first stage's tail in its own order.

    The tail keeps its order but gets scores below every reranked one (rank-based), because the
    two stages' scores live on different scales."""
    merged: Run = {}
    for qid, scores in first.items():
        head = reranked.get(qid, {})
        ranked = rank_documents(scores)
        require_scored("the reranker", qid, [doc for doc, _ in ranked[:depth]], head)
        out = dict(head)
        floor = min(head.values(), default=0.0)
        tail = ranked[depth:]
        for position, (doc, _) in enumerate(tail):
            out[doc] = floor - 1.0 - position
        merged[qid] = out
    return merged


class RerankingRetriever:
    """Retrieves `max(k, depth)` with `first_stage`, reranks each query's top `depth`."""

    def __init__(self, first_stage: Retriever, reranker: Reranker, depth: int = 100,
                 name: str | None = None):
        if depth < 1:
            raise ValueError(f"depth={depth} must be >= 1 (documents reranked per query)")
        self.first_stage = first_stage
        self.reranker = reranker
        self.depth = depth
        self.name = name or f"{first_stage.name}>>{reranker.name}@{depth}"
        self.timings: dict[str, float] = {}

    def retrieve(self, collection: Collection, queries: dict[str, str], k: int) -> Run:
        self.timings = {}
        start = time.perf_counter()
        first = self.first_stage.retrieve(collection, queries, max(k, self.depth))
        first_s = time.perf_counter() - start
        candidates = top_candidates(first, self.depth)
        wanted = {doc for scores in candidates.values() for doc in scores}
        documents = {d.doc_id: d.contents for d in collection.documents if d.doc_id in wanted}
        start = time.perf_counter()
        reranked = self.reranker.rerank(queries, candidates, documents)
        rerank_s = time.perf_counter() - start
        merged = merge_reranked(first, reranked, self.depth)
        n = max(len(queries), 1)
        self.timings.update({f"first_stage.{key}": value for key, value in
                             getattr(self.first_stage, "timings", {}).items()})
        query_s, corpus_s = query_side_seconds(first_s, self.first_stage)
        self.timings.update({
            "first_stage_s": first_s, "first_stage_corpus_s": corpus_s,
            "first_stage_ms_per_query": 1000 * query_s / n,
            "rerank_s": rerank_s, "rerank_ms_per_query": 1000 * rerank_s / n,
            "rerank_depth": float(self.depth)})
        for key, total in getattr(self.reranker, "costs", {}).items():
            self.timings[f"rerank_{key}_per_query"] = total / n
        return {qid: dict(rank_documents(scores)[:k]) for qid, scores in merged.items()}
