"""ANNCUR against exact scoring: with as many anchor items as the score matrix's rank (or k_i = N
and full-rank R) the CUR approximation reproduces every exact score and the exact top-k; on a
noisy low-rank matrix recall of the exact top-10 grows with the cross-encoder budget; the
offline matrix is cached; the MiniLM cosine stand-in scores pairs as exact dense search does."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from irjax.data.collection import Collection, Document, LoadReport, load_collection
from irjax.data.runs import rank_documents
from irjax.retrieval.anncur import AnnCURRetriever, choose_anchor_items, cur_projection
from tests.helpers.tiny_collection import write_collection


class MatrixScorer:
    """Scores the pair ("q<i>", "d<j>") as matrix[i, j], counting the pairs it scores."""
    name = "matrix"

    def __init__(self, matrix: np.ndarray):
        self.matrix, self.calls = matrix, 0
        self.fingerprint = f"matrix:{hash(matrix.tobytes())}"

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        self.calls += len(queries)
        return np.array([self.matrix[int(q[1:]), int(d[1:])] for q, d in zip(queries, documents)])


def toy(num_docs: int, num_anchor: int, num_test: int) -> tuple[Collection, dict, dict]:
    docs = [Document(f"doc{j}", "", f"d{j}") for j in range(num_docs)]
    anchors = {f"a{i}": f"q{i}" for i in range(num_anchor)}
    tests = {f"t{i}": f"q{num_anchor + i}" for i in range(num_test)}
    collection = Collection("toy", "test", Path("/toy"), docs, {**anchors, **tests},
                            {qid: {"doc0": 1} for qid in tests}, LoadReport({}))
    return collection, anchors, tests


def low_rank(rows: int, cols: int, rank: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, rank)) @ rng.normal(size=(rank, cols)) + \
        noise * rng.normal(size=(rows, cols))


def exact_top(matrix_row: np.ndarray, k: int) -> set[str]:
    return {f"doc{j}" for j in np.argsort(-matrix_row)[:k]}


def test_full_rank_with_every_item_as_anchor_is_exact() -> None:
    scores = np.random.default_rng(0).normal(size=(45, 30))   # 40 anchors + 5 test, rank 30
    items = choose_anchor_items(30, 30, seed=0)
    approx = scores[40:, items] @ cur_projection(scores[:40], items)
    np.testing.assert_allclose(approx, scores[40:], atol=1e-4)


def test_rank_many_anchor_items_reproduce_exact_scores_and_top_k(tmp_path: Path) -> None:
    scores = low_rank(60 + 6, 80, rank=8, noise=0.0, seed=1)
    collection, anchors, tests = toy(80, 60, 6)
    scorer = MatrixScorer(scores)
    retriever = AnnCURRetriever(scorer, num_anchor_items=8, rerank_depth=0,
                                anchor_queries=anchors, cache_dir=str(tmp_path))
    run = retriever.retrieve(collection, tests, k=80)
    for i, qid in enumerate(tests):
        got = np.array([run[qid][f"doc{j}"] for j in range(80)])
        np.testing.assert_allclose(got, scores[60 + i], atol=1e-4)
        assert [d for d, _ in rank_documents(run[qid])[:10]] == \
            [f"doc{j}" for j in np.argsort(-scores[60 + i])[:10]]
    # 8 exact calls per test query, not 80: the rest of the row was approximated
    assert retriever.timings["ce_calls_per_query"] == 8.0
    assert scorer.calls == 60 * 80 + 6 * 8


def test_recall_grows_with_the_budget(tmp_path: Path) -> None:
    scores = low_rank(150 + 30, 400, rank=25, noise=0.5, seed=2)
    collection, anchors, tests = toy(400, 150, 30)

    def recall(items: int, depth: int) -> float:
        retriever = AnnCURRetriever(MatrixScorer(scores), num_anchor_items=items,
                                    rerank_depth=depth, anchor_queries=anchors,
                                    cache_dir=str(tmp_path))
        run = retriever.retrieve(collection, tests, k=10)
        assert retriever.timings["ce_calls_per_query"] == items + depth
        return float(np.mean([len(set(run[q]) & exact_top(scores[150 + i], 10)) / 10
                              for i, q in enumerate(tests)]))

    by_items = [recall(items, 0) for items in (10, 25, 50, 100)]
    by_depth = [recall(25, depth) for depth in (0, 10, 40, 100)]
    assert by_items == sorted(by_items) and by_items[-1] > by_items[0] + 0.2, by_items
    assert by_depth == sorted(by_depth) and by_depth[-1] > by_depth[0] + 0.2, by_depth
    assert by_depth[-1] > 0.9


def test_anchor_matrix_is_cached_and_test_queries_are_never_anchors(tmp_path: Path) -> None:
    scores = low_rank(20 + 2, 15, rank=3, noise=0.0, seed=3)
    collection, anchors, tests = toy(15, 20, 2)
    first = MatrixScorer(scores)
    AnnCURRetriever(first, 3, 2, anchor_queries=anchors, cache_dir=str(tmp_path)).retrieve(
        collection, tests, k=5)
    again = MatrixScorer(scores)
    retriever = AnnCURRetriever(again, 3, 2, anchor_queries=anchors, cache_dir=str(tmp_path))
    retriever.retrieve(collection, tests, k=5)
    assert first.calls == 20 * 15 + 2 * 5 and again.calls == 2 * 5
    assert list(retriever.anchor_queries(collection, {"a0": "q0", "x": "q1"})) == \
        [f"a{i}" for i in range(2, 20)]
    with pytest.raises(ValueError, match=r"num_anchor_items=16 must lie in \[1, 15\]"):
        AnnCURRetriever(again, 16, 0, anchor_queries=anchors,
                        cache_dir=str(tmp_path)).retrieve(collection, tests, k=5)


def test_anchor_split_of_the_collection_folder(tmp_path: Path) -> None:
    collection = load_collection(write_collection(tmp_path / "c"), "test")
    retriever = AnnCURRetriever(MatrixScorer(np.zeros((1, 1))), anchor_split="train")
    assert list(retriever.anchor_queries(collection, collection.eval_queries())) == \
        ["q1", "q2", "q3", "q4"]
    with pytest.raises(ValueError, match="anchor_split='dev'.*does not exist"):
        AnnCURRetriever(MatrixScorer(np.zeros((1, 1))), anchor_split="dev").anchor_queries(
            collection, {})


def test_minilm_cosine_stand_in_matches_exact_dense_search(tmp_path: Path) -> None:
    from irjax.models.dual_encoder import TextEncoder
    from irjax.retrieval.dense import DenseRetriever
    from irjax.retrieval.encoder_pair_scorer import EncoderPairScorer

    collection = load_collection(write_collection(tmp_path / "c"), "test")
    encoder = TextEncoder.from_pretrained(max_length=64)
    queries = collection.eval_queries()
    dense = DenseRetriever(encoder, index="exact", cache_dir=str(tmp_path / "emb")).retrieve(
        collection, queries, k=6)
    # every document an anchor item: ANNCUR scores every pair exactly, as the dense index does
    run = AnnCURRetriever(EncoderPairScorer(encoder), num_anchor_items=6, rerank_depth=0,
                          cache_dir=str(tmp_path)).retrieve(collection, queries, k=6)
    for qid in queries:
        assert run[qid] == pytest.approx(dense[qid], abs=1e-5)
