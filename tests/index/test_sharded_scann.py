"""The shard-bounded ScaNN index: recall against exact search, int8 rescoring, save/load, and
use as a token index's search structure."""
import numpy as np
import pytest

from irjax.index.base import create_index, load_index
from irjax.index.token_index import TokenIndex


def clustered(n, dim=32, clusters=50, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    x = centers[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])


@pytest.mark.parametrize("storage", ["float32", "int8"])
def test_recall_against_exact_over_several_shards(storage):
    x = clustered(12_000)
    queries = clustered(50, seed=1)
    ids = [str(i) for i in range(len(x))]
    index = create_index("scann_sharded", shard_size=5_000, reorder_num_neighbors=200,
                         storage=storage).build(x, ids)
    assert index.build_params()["shards"] == 3
    result = index.search(queries, 10)
    truth = np.argsort(-(queries @ x.T), axis=1)[:, :10]
    assert recall(result.indices, truth) >= 0.95
    # Returned scores are exact dot products (int8: within quantisation error).
    exact = np.take_along_axis(queries @ x.T, result.indices, 1)
    tolerance = 1e-5 if storage == "float32" else 2e-2
    np.testing.assert_allclose(result.scores, exact, atol=tolerance)
    assert np.all(np.diff(result.scores, axis=1) <= 1e-6)


def test_save_load_round_trip(tmp_path):
    x = clustered(3_000)
    queries = clustered(5, seed=2)
    index = create_index("scann_sharded", shard_size=1_200,
                         reorder_num_neighbors=100).build(x, [f"d{i}" for i in range(len(x))])
    index.save(tmp_path / "idx")
    loaded = load_index(tmp_path / "idx", expected_dim=32)
    a, b = index.search(queries, 7), loaded.search(queries, 7)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.ids == b.ids


def test_rejects_non_finite_rows_naming_the_shard():
    x = clustered(2_500)
    x[2_100, 3] = np.nan
    with pytest.raises(ValueError, match="rows 2000..2499"):
        create_index("scann_sharded", shard_size=500).build(x, [str(i) for i in range(len(x))])


def test_token_index_over_sharded_scann_matches_exact_token_retrieval():
    rng = np.random.default_rng(3)
    docs = [clustered(int(n), seed=10 + i) for i, n in enumerate(rng.integers(5, 40, 200))]
    chunks = [([f"doc{i}" for i in range(s, s + 50)], docs[s : s + 50]) for s in range(0, 200, 50)]
    sharded = TokenIndex.build_streaming(chunks, kind="scann_sharded", shard_size=1_500,
                                         reorder_num_neighbors=2_000)
    exact = TokenIndex.build_streaming(chunks, kind="exact")
    q = clustered(6, seed=99)
    s_scores, s_docs = sharded.search_tokens(q, 50)
    e_scores, e_docs = exact.search_tokens(q, 50)
    np.testing.assert_allclose(s_scores, e_scores, atol=1e-5)
    assert sharded.xtr_search(q, 50, 10)[0] == exact.xtr_search(q, 50, 10)[0]
