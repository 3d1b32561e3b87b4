"""RerankingRetriever: the identity reranker gives back BM25's run on real SciFact test queries;
a reranker's order replaces the first stage's inside the depth and never outside it; costs and
stage timings reach the timings per query; a reranker that drops a candidate is an error;
InterpolatedReranker mixes the two stages' normalised scores as computed by hand."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping

import numpy as np
import pytest

from irjax.data.collection import load_collection
from irjax.data.runs import Run, rank_documents
from irjax.retrieval.bm25 import SparseRetriever
from irjax.retrieval.rerank import (IdentityReranker, InterpolatedReranker, PairwiseReranker,
                                    RerankingRetriever, merge_reranked)
from tests.helpers.tiny_collection import write_collection


class FixedRun:
    name = "fixed"

    def __init__(self, run: Run):
        self.run, self.timings = run, {"search_s": 0.5}

    def retrieve(self, collection, queries, k):  # noqa: ANN001
        return {q: dict(rank_documents(self.run[q])[:k]) for q in queries}


class ReverseReranker:
    """Scores candidates by the reverse of their first-stage order, counting calls."""
    name = "reverse"

    def __init__(self) -> None:
        self.costs: dict[str, float] = {}

    def rerank(self, queries: Mapping[str, str], candidates: Run,
               documents: Mapping[str, str]) -> Run:
        assert all(doc in documents for scores in candidates.values() for doc in scores)
        self.costs = {"model_calls": float(sum(map(len, candidates.values()))), "lm_tokens": 60.0}
        return {q: {doc: float(rank) for rank, (doc, _) in enumerate(rank_documents(scores))}
                for q, scores in candidates.items()}


def test_identity_reranker_returns_the_first_stage_run(shared_data: Path) -> None:
    collection = load_collection(shared_data / "scifact", "test")
    queries = dict(list(collection.eval_queries().items())[:20])
    bm25 = SparseRetriever()
    first = bm25.retrieve(collection, queries, k=100)
    reranked = RerankingRetriever(SparseRetriever(), IdentityReranker(), depth=50).retrieve(
        collection, queries, k=100)
    assert set(reranked) == set(first)
    for qid in first:  # same documents in the same order (the tail's scores are rank-based)
        assert [d for d, _ in rank_documents(reranked[qid])] == \
            [d for d, _ in rank_documents(first[qid])]
        head = dict(rank_documents(first[qid])[:50])
        assert {d: reranked[qid][d] for d in head} == pytest.approx(head)


def test_reranker_order_inside_depth_first_stage_order_outside(tmp_path: Path) -> None:
    collection = load_collection(write_collection(tmp_path / "c"), "test")
    run = {q: {f"d{i}": 10.0 - i for i in range(1, 7)} for q in collection.eval_queries()}
    retriever = RerankingRetriever(FixedRun(run), ReverseReranker(), depth=3)
    out = retriever.retrieve(collection, collection.eval_queries(), k=5)
    for scores in out.values():
        assert [d for d, _ in rank_documents(scores)] == ["d3", "d2", "d1", "d4", "d5"]
    n = len(collection.eval_queries())
    assert retriever.timings["rerank_model_calls_per_query"] == 3.0
    assert retriever.timings["rerank_lm_tokens_per_query"] == 60.0 / n
    assert retriever.timings["first_stage.search_s"] == 0.5
    assert retriever.name == "fixed>>reverse@3"
    assert {"first_stage_ms_per_query", "rerank_ms_per_query"} <= set(retriever.timings)


class SlowIndexRun(FixedRun):
    """A first stage that spends 0.3 s indexing the corpus before answering."""

    def retrieve(self, collection, queries, k):  # noqa: ANN001
        start = time.perf_counter()
        time.sleep(0.3)
        self.timings = {"index_s": time.perf_counter() - start}
        return super().retrieve(collection, queries, k)


def test_first_stage_corpus_work_is_not_charged_per_query(tmp_path: Path) -> None:
    collection = load_collection(write_collection(tmp_path / "c"), "test")
    run = {q: {f"d{i}": 10.0 - i for i in range(1, 7)} for q in collection.eval_queries()}
    retriever = RerankingRetriever(SlowIndexRun(run), IdentityReranker(), depth=3)
    retriever.retrieve(collection, collection.eval_queries(), k=5)
    n = len(collection.eval_queries())
    assert retriever.timings["first_stage_corpus_s"] >= 0.3
    assert retriever.timings["first_stage_s"] >= retriever.timings["first_stage_corpus_s"]
    # what is left per query is the lookup of a fixed run: far below the 0.3 s of indexing
    assert retriever.timings["first_stage_ms_per_query"] * n < 100.0


def test_missing_candidate_score_is_an_error() -> None:
    first = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    with pytest.raises(ValueError, match="'q'.*'b'"):
        merge_reranked(first, {"q": {"a": 1.0, "c": 0.5}}, depth=2)
    assert merge_reranked(first, {"q": {"a": 1.0, "b": 5.0}}, depth=2) == \
        {"q": {"a": 1.0, "b": 5.0, "c": 0.0}}


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth=0"):
        RerankingRetriever(SparseRetriever(), IdentityReranker(), depth=0)


class OverlapScorer:
    """Counts shared lower-cased words: a pointwise scorer simple enough to check by hand."""
    name = "overlap"

    def __init__(self) -> None:
        self.costs = {"flops": 0.0}

    def score_pairs(self, queries, documents):  # noqa: ANN001
        self.costs = {"flops": 2.0 * len(queries)}
        return np.array([len(set(q.lower().split()) & set(d.lower().split()))
                         for q, d in zip(queries, documents)], np.float64)


def test_pairwise_reranker_scores_every_pair_in_batches() -> None:
    candidates = {"q1": {"a": 1.0, "b": 2.0}, "q2": {"a": 5.0, "b": 1.0, "c": 0.0}}
    queries = {"q1": "red fox", "q2": "blue whale song"}
    documents = {"a": "a red fox runs", "b": "blue sky", "c": "whale song is blue"}
    reranker = PairwiseReranker(OverlapScorer(), batch_size=2)
    run = reranker.rerank(queries, candidates, documents)
    assert run == {"q1": {"a": 2.0, "b": 0.0}, "q2": {"a": 0.0, "b": 1.0, "c": 3.0}}
    assert reranker.costs == {"model_calls": 5.0, "flops": 10.0}  # batches of 2, 2, 1 pairs


def test_first_judged_queries_keeps_corpus_and_cache_keys(shared_data: Path) -> None:
    collection = load_collection(shared_data / "scifact", "test")
    subset = collection.first_judged_queries(7)
    assert list(subset.eval_queries()) == list(collection.eval_queries())[:7]
    assert subset.fingerprint() == collection.fingerprint()
    assert subset.corpus_rows == collection.corpus_rows and subset.documents is collection.documents
    with pytest.raises(ValueError, match="max_queries=0"):
        collection.first_judged_queries(0)


def test_interpolated_reranker_by_hand() -> None:
    """Min-max normalised first stage and reranker, mixed by the weight; the ends of the weight
    reproduce either stage's order, and costs are the inner reranker's."""
    candidates = {"q": {"a": 9.0, "b": 5.0, "c": 1.0}}  # first-stage order a, b, c
    inner = ReverseReranker()  # reranker scores a 0, b 1, c 2
    fused = InterpolatedReranker(inner, first_stage_weight=0.25).rerank(
        {"q": "text"}, candidates, {"a": "", "b": "", "c": ""})
    # first normalised: a 1, b 0.5, c 0; reranker normalised: a 0, b 0.5, c 1
    assert fused["q"] == pytest.approx({"a": 0.25, "b": 0.5, "c": 0.75})
    assert InterpolatedReranker(inner).costs == inner.costs and inner.costs["model_calls"] == 3.0
    only_first = InterpolatedReranker(ReverseReranker(), 1.0).rerank({"q": ""}, candidates, {
        "a": "", "b": "", "c": ""})
    assert [d for d, _ in rank_documents(only_first["q"])] == ["a", "b", "c"]
    only_second = InterpolatedReranker(ReverseReranker(), 0.0).rerank({"q": ""}, candidates, {
        "a": "", "b": "", "c": ""})
    assert [d for d, _ in rank_documents(only_second["q"])] == ["c", "b", "a"]
    assert InterpolatedReranker(inner, 0.5).name == "reverse+first0.5"
    with pytest.raises(ValueError, match="first_stage_weight=1.5"):
        InterpolatedReranker(inner, 1.5)


def test_interpolated_reranker_needs_every_candidate_scored() -> None:
    class DropsOne(ReverseReranker):
        def rerank(self, queries, candidates, documents):  # noqa: ANN001
            run = super().rerank(queries, candidates, documents)
            return {q: dict(list(scores.items())[1:]) for q, scores in run.items()}

    with pytest.raises(ValueError, match="'q'"):
        InterpolatedReranker(DropsOne()).rerank({"q": ""}, {"q": {"a": 2.0, "b": 1.0}},
                                                {"a": "", "b": ""})
