"""faiss: the flat index must agree with exact search; IVF/HNSW must be good approximations."""
import numpy as np
import pytest

from irjax.index.exact import ExactIndex
from irjax.index.faiss_index import FaissIndex


def clustered(n: int, d: int, seed: int, clusters: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, d))
    x = centers[rng.integers(0, clusters, n)] + rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray, list[str]]:
    data = clustered(3100, 32, seed=0)
    return data[:3000], data[3000:], [f"d{i}" for i in range(3000)]


def test_flat_equals_exact(corpus):
    vectors, queries, ids = corpus
    exact = ExactIndex(corpus_chunk_size=1024).build(vectors, ids).search(queries, 50)
    flat = FaissIndex().build(vectors, ids).search(queries, 50)
    np.testing.assert_array_equal(flat.indices, exact.indices)
    np.testing.assert_allclose(flat.scores, exact.scores, atol=1e-5)
    assert flat.ids == exact.ids


@pytest.mark.parametrize("structure, params", [("ivf", {"nlist": 55, "nprobe": 38}),
                                               ("hnsw", {"ef_search": 128})])
def test_approximate_structures_have_high_recall(corpus, structure, params):
    vectors, queries, ids = corpus
    exact = ExactIndex().build(vectors, ids).search(queries, 10)
    index = FaissIndex(structure=structure).build(vectors, ids)
    assert index.build_params() == params
    result = index.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(result.indices, exact.indices)])
    assert recall >= 0.9


def test_ivf_rows_short_of_k_are_searched_exhaustively(corpus):
    vectors, queries, ids = corpus
    index = FaissIndex(structure="ivf", nlist=50, nprobe=1).build(vectors, ids)
    result = index.search(queries[:5], 500)  # one list holds ~60 points, far fewer than 500
    assert (result.indices >= 0).all()
    exact = ExactIndex().build(vectors, ids).search(queries[:5], 500)
    np.testing.assert_array_equal(result.indices, exact.indices)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="unknown faiss structure 'pq'.*'flat', 'ivf', 'hnsw'"):
        FaissIndex(structure="pq")
    with pytest.raises(ValueError, match="nprobe must be a positive integer"):
        FaissIndex(structure="ivf", nprobe=0)
    with pytest.raises(ValueError, match="nlist=100 exceeds the corpus size 40"):
        FaissIndex(structure="ivf", nlist=100).build(clustered(40, 8, seed=1),
                                                     [str(i) for i in range(40)])
