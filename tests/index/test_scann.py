"""ScaNN: size-scaled parameters, recall against exact search, and complete rows for large k."""
import time

import numpy as np
import pytest

from irjax.index.exact import ExactIndex
from irjax.index.scann_index import ScannIndex, ScannPlan, plan_scann


def clustered(n: int, d: int, seed: int, clusters: int = 200, spread: float = 1.0) -> np.ndarray:
    """Unit vectors from a Gaussian mixture: like real embeddings, they form topical clusters."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, d))
    x = centers[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]))


def test_plan_scales_with_corpus_size():
    assert plan_scann(1023) == ScannPlan(mode="brute_force")
    assert plan_scann(1024) == ScannPlan("ah", 0, 0, 400, 1024)
    assert plan_scann(99_999) == ScannPlan("ah", 0, 0, 400, 99_999)
    assert plan_scann(4096, mode="tree") == ScannPlan("tree", 64, 32, 400, 4096)
    assert plan_scann(100_000) == ScannPlan("tree", 316, 48, 400, 100_000)
    assert plan_scann(1_000_000) == ScannPlan("tree", 1000, 150, 400, 100_000)
    # small trees search enough leaves to score ~2k points; tiny ones keep >= 50 points per leaf
    assert plan_scann(300, mode="tree") == ScannPlan("tree", 6, 6, 400, 300)
    assert plan_scann(10_000, brute_force_below=20_000).mode == "brute_force"
    assert plan_scann(10_000, tree_above=5_000).mode == "tree"
    assert plan_scann(10_000, num_leaves=50, leaves_to_search=5).leaves_to_search == 5
    with pytest.raises(ValueError, match="num_leaves must be between 2 and the corpus size 100"):
        plan_scann(100, mode="tree", num_leaves=500)
    with pytest.raises(ValueError, match="leaves_to_search must be between 1 and num_leaves=50"):
        plan_scann(10_000, num_leaves=50, leaves_to_search=60)
    with pytest.raises(ValueError, match="unknown ScaNN mode 'ivf'"):
        ScannIndex(mode="ivf")


@pytest.mark.parametrize("n", [5_000, 20_000])
def test_tree_recall_at_10_against_exact(n):
    data = clustered(n + 500, 64, seed=n)
    corpus, queries = data[:n], data[n:]
    ids = [f"d{i}" for i in range(n)]
    truth = ExactIndex().build(corpus, ids).search(queries, 10)
    start = time.perf_counter()
    index = ScannIndex(mode="tree").build(corpus, ids)
    build_s = time.perf_counter() - start
    assert index.plan.mode == "tree" and index.plan.num_leaves == round(np.sqrt(n))
    result = index.search(queries, 10)
    recall = recall_at(result.indices, truth.indices, 10)
    print(f"scann n={n} plan={index.plan} recall@10={recall:.4f} build={build_s:.2f}s")
    assert recall >= 0.95
    # reordered scores are exact inner products of the returned rows
    np.testing.assert_allclose(
        result.scores, np.einsum("qd,qkd->qk", queries, corpus[result.indices]), atol=1e-5)


def test_auto_mode_below_tree_size_uses_ah_with_high_recall():
    n = 5_000
    data = clustered(n + 300, 64, seed=11)
    corpus, queries = data[:n], data[n:]
    ids = [f"d{i}" for i in range(n)]
    truth = ExactIndex().build(corpus, ids).search(queries, 100)
    index = ScannIndex().build(corpus, ids)
    assert index.plan.mode == "ah"
    result = index.search(queries, 100)
    assert recall_at(result.indices, truth.indices, 10) >= 0.99
    assert recall_at(result.indices, truth.indices, 100) >= 0.97


def test_brute_force_mode_equals_exact():
    corpus = clustered(1500, 32, seed=3)
    queries = clustered(20, 32, seed=4)
    ids = [f"d{i}" for i in range(1500)]
    index = ScannIndex(mode="brute_force").build(corpus, ids)
    assert index.plan.mode == "brute_force"
    exact = ExactIndex().build(corpus, ids).search(queries, 25)
    result = index.search(queries, 25)
    np.testing.assert_array_equal(result.indices, exact.indices)
    np.testing.assert_allclose(result.scores, exact.scores, atol=1e-5)


def test_large_k_on_a_tree_returns_complete_rows():
    """Searched leaves hold fewer than k points here, so rows must be widened, not NaN-padded."""
    corpus = clustered(5000, 16, seed=5)
    queries = clustered(4, 16, seed=6)
    index = ScannIndex(leaves_to_search=2).build(corpus, [f"d{i}" for i in range(5000)])
    result = index.search(queries, 3000)
    assert result.indices.shape == (4, 3000)
    assert np.isfinite(result.scores).all()
    assert (np.diff(result.scores, axis=1) <= 0).all()
    for row in result.indices:
        assert len(set(row.tolist())) == 3000 and row.min() >= 0 and row.max() < 5000
