"""The PQ index over given centroids and codes: with faiss's centroids it scores as faiss's
IndexPQ, it round-trips through save/load, and it refuses malformed centroids and codes."""
import faiss
import numpy as np
import pytest

from irjax.index.base import IndexIntegrityError, create_index, load_index
from irjax.index.pq_codes import PQCodesIndex, adc_scores, faiss_pq

N, D, M = 400, 16, 4


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((N, D)).astype(np.float32)
    queries = rng.standard_normal((5, D)).astype(np.float32)
    return vectors, queries, [f"d{i}" for i in range(N)]


def test_faiss_centroids_and_codes_give_faiss_pq_scores(data):
    vectors, queries, ids = data
    pq = faiss.IndexPQ(D, M, 8, faiss.METRIC_INNER_PRODUCT)
    pq.train(vectors)
    pq.add(vectors)
    centroids = faiss.vector_to_array(pq.pq.centroids).reshape(M, 256, D // M)
    codes = faiss.vector_to_array(pq.codes).reshape(N, M)
    expected = np.empty((len(queries), N), np.float32)
    scores, rows = pq.search(queries, N)
    np.put_along_axis(expected, rows, scores, axis=1)
    np.testing.assert_allclose(adc_scores(queries, centroids, codes), expected, rtol=1e-4,
                               atol=1e-4)
    index = PQCodesIndex.from_codes(centroids, codes, ids)
    got = index.search(queries, 10)
    np.testing.assert_array_equal(got.indices, rows[:, :10])
    np.testing.assert_allclose(got.scores, scores[:, :10], rtol=1e-4, atol=1e-4)
    # the reconstructions are faiss's decoded vectors
    np.testing.assert_allclose(index.reconstruct(), pq.reconstruct_n(0, N), rtol=1e-5, atol=1e-6)


def test_trained_centroids_round_trip_through_save_load(data, tmp_path):
    vectors, queries, ids = data
    index = create_index("pq_codes", pq_subspaces=M).build(vectors, ids)
    assert index.bytes_per_doc == M and index.codes.dtype == np.uint8
    moved = index.with_centroids(index.centroids * 1.5 + 0.1)
    moved.save(tmp_path / "jpq")
    loaded = load_index(tmp_path / "jpq", expected_dim=D)
    np.testing.assert_array_equal(loaded.codes, index.codes)  # the codes never change
    np.testing.assert_array_equal(loaded.centroids, moved.centroids)
    np.testing.assert_array_equal(loaded.search(queries, 7).indices, moved.search(queries, 7).indices)
    assert loaded.build_params()["bytes_per_doc"] == M


def test_bad_input_is_rejected(data, tmp_path):
    vectors, _, ids = data
    centroids, codes = faiss_pq(vectors, M)
    with pytest.raises(ValueError, match="uint8"):
        PQCodesIndex.from_codes(centroids, codes.astype(np.int64), ids)
    with pytest.raises(ValueError, match="centroids must be float"):
        PQCodesIndex.from_codes(centroids[:, :100], codes, ids)
    with pytest.raises(ValueError, match="NaN"):
        PQCodesIndex.from_codes(np.full_like(centroids, np.nan), codes, ids)
    with pytest.raises(ValueError, match="one id per row"):
        PQCodesIndex.from_codes(centroids, codes, ids[:-1])
    with pytest.raises(ValueError, match="divisor"):
        faiss_pq(vectors, 5)
    with pytest.raises(ValueError, match=">= 256 vectors"):
        faiss_pq(vectors[:100], M)
    with pytest.raises(ValueError, match="metric='dot'"):
        PQCodesIndex(metric="cosine")
    index = PQCodesIndex.from_codes(centroids, codes, ids)
    with pytest.raises(ValueError, match="cannot replace"):
        index.with_centroids(centroids[:2])
    index.save(tmp_path / "pq")
    np.save(tmp_path / "pq" / "codes.npy", codes[:, :2])
    with pytest.raises(IndexIntegrityError, match="sha256|bytes"):
        load_index(tmp_path / "pq")
