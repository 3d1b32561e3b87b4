"""ExactIndex must match a numpy brute force row for row, whatever the chunking."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.index.exact import ExactIndex, top_k_over_chunks


def _numpy_top_k(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), order


def _data(n: int, d: int, num_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)).astype(np.float32),
            rng.standard_normal((num_queries, d)).astype(np.float32))


@pytest.mark.parametrize(
    "n, d, corpus_chunk, query_chunk, num_queries, k",
    [
        (1000, 24, 300, 16, 37, 10),  # chunks do not divide n or the query count
        (1000, 24, 300, 16, 37, 450),  # k larger than a corpus chunk
        (257, 8, 64, 5, 11, 257),  # k == n: every row, including the last partial chunk
        (130, 8, 8192, 256, 3, 7),  # corpus smaller than one chunk
    ],
)
def test_matches_numpy_brute_force(n, d, corpus_chunk, query_chunk, num_queries, k):
    vectors, queries = _data(n, d, num_queries)
    ids = [f"doc{i}" for i in range(n)]
    index = ExactIndex(corpus_chunk_size=corpus_chunk, query_chunk_size=query_chunk)
    result = index.build(vectors, ids).search(queries, k)
    ref_scores, ref_rows = _numpy_top_k(queries, vectors, k)
    np.testing.assert_array_equal(result.indices, ref_rows)
    np.testing.assert_allclose(result.scores, ref_scores, rtol=1e-5, atol=1e-5)
    assert result.ids == [[ids[i] for i in row] for row in ref_rows]
    assert result.scores.dtype == np.float32 and result.indices.dtype == np.int64
    assert (np.diff(result.scores, axis=1) <= 0).all()


def test_k_larger_than_corpus_is_clamped_and_padding_never_returned():
    vectors, queries = _data(50, 8, 3)
    result = ExactIndex(corpus_chunk_size=16).build(vectors, [str(i) for i in range(50)])
    result = result.search(queries, 100)
    assert result.indices.shape == (3, 50)
    for row in result.indices:
        assert sorted(row.tolist()) == list(range(50))  # each real row once, no padded rows
    assert np.isfinite(result.scores).all()


def test_never_materialises_full_score_matrix():
    """The compiled program only holds [query_block, chunk] score tiles, never [block, n]."""
    vectors, queries = _data(1000, 16, 32)
    index = ExactIndex(corpus_chunk_size=128, query_chunk_size=32).build(
        vectors, [str(i) for i in range(1000)])
    chunks = index._chunks
    assert chunks.shape[:2] == (8, 128)
    jaxpr = str(jax.make_jaxpr(top_k_over_chunks, static_argnums=(3,))(
        jnp.asarray(queries), chunks, jnp.int32(1000), 10))
    assert "f32[32,128]" in jaxpr
    assert "f32[32,1024]" not in jaxpr and "f32[32,1000]" not in jaxpr


def test_repeated_searches_reuse_the_compiled_program():
    vectors, queries = _data(700, 16, 60, seed=1)
    index = ExactIndex(corpus_chunk_size=256, query_chunk_size=16).build(
        vectors, [str(i) for i in range(700)])
    index.search(queries[:40], 5)
    compiled = top_k_over_chunks._cache_size()
    index.search(queries[:57], 5)  # different batch size, same 16-row blocks
    index.search(queries[3:20], 5)
    assert top_k_over_chunks._cache_size() == compiled


def test_cosine_metric_normalises_vectors_and_queries():
    vectors, queries = _data(200, 12, 5, seed=2)
    scale = np.random.default_rng(3).uniform(0.1, 10.0, size=(200, 1)).astype(np.float32)
    ids = [str(i) for i in range(200)]
    cosine = ExactIndex(metric="cosine").build(vectors * scale, ids).search(queries * 7.0, 10)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    ref_scores, ref_rows = _numpy_top_k(unit_q, unit, 10)
    np.testing.assert_array_equal(cosine.indices, ref_rows)
    np.testing.assert_allclose(cosine.scores, ref_scores, atol=1e-5)
    assert cosine.scores.max() <= 1.0 + 1e-5


def test_vectors_round_trip_and_chunk_options_are_validated():
    vectors, _ = _data(300, 8, 1)
    index = ExactIndex(corpus_chunk_size=128).build(vectors, [str(i) for i in range(300)])
    np.testing.assert_array_equal(index.vectors(), vectors)
    assert index.build_params() == {"effective_corpus_chunk_size": 128, "num_corpus_chunks": 3}
    with pytest.raises(ValueError, match="corpus_chunk_size must be a positive integer"):
        ExactIndex(corpus_chunk_size=0)
    with pytest.raises(ValueError, match="query_chunk_size"):
        ExactIndex(query_chunk_size=2.5)
