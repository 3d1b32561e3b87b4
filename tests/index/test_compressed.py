"""Compressed indexes: each codec round-trips through save/load, scores as its decoded vectors,
and with a rerank depth of the whole corpus returns exactly what exact search returns."""
import numpy as np
import pytest

from irjax.index.base import create_index, load_index
from irjax.index.compressed import hamming_distances, pack_signs
from irjax.index.exact import ExactIndex

N, D = 600, 32


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((N, D)).astype(np.float32)
    queries = rng.standard_normal((7, D)).astype(np.float32)
    return vectors, queries, [f"d{i}" for i in range(N)]


@pytest.mark.parametrize("codec", ["float16", "int8", "pq", "binary"])
def test_rerank_over_the_whole_corpus_is_exact_and_survives_save_load(codec, data, tmp_path):
    vectors, queries, ids = data
    exact = ExactIndex().build(vectors, ids).search(queries, 10)
    index = create_index("compressed", codec=codec, pq_subspaces=8, rerank=N).build(vectors, ids)
    got = index.search(queries, 10)
    np.testing.assert_array_equal(got.indices, exact.indices)
    np.testing.assert_allclose(got.scores, exact.scores, rtol=1e-5)
    index.save(tmp_path / codec)
    loaded = load_index(tmp_path / codec)
    np.testing.assert_array_equal(loaded.search(queries, 10).indices, exact.indices)
    assert loaded.build_params()["bytes_per_doc"] == index.bytes_per_doc


@pytest.mark.parametrize("codec,bytes_per_doc", [("float16", 2 * D), ("int8", D + 4), ("pq", 8),
                                                 ("binary", D // 8)])
def test_codes_score_as_their_decoded_vectors(codec, bytes_per_doc, data):
    vectors, queries, ids = data
    index = create_index("compressed", codec=codec, pq_subspaces=8).build(vectors, ids)
    assert index.bytes_per_doc == bytes_per_doc and index.rerank_bytes_per_doc == 0
    result = index.search(queries, 5)
    if codec == "binary":  # score = minus the Hamming distance between sign patterns
        signs_q, signs_d = queries > 0, vectors > 0
        expected = -(signs_q[:, None, :] != signs_d[None, :, :]).sum(-1)
    elif codec == "pq":
        decoded = index._pq.reconstruct_n(0, N)
        expected = queries @ decoded.T
    else:
        decoded = (index._codes.astype(np.float32) if codec == "float16"
                   else index._codes.astype(np.float32) * index._scales[:, None])
        expected = queries @ decoded.T
    top = np.take_along_axis(expected, result.indices, axis=1)
    np.testing.assert_allclose(result.scores, top, rtol=1e-4, atol=1e-4)
    assert np.all(np.sort(expected, axis=1)[:, ::-1][:, :5] <= top[:, :1] + 1e-4)  # the best first


def test_hamming_distance_counts_differing_bits_in_blocks(monkeypatch):
    import irjax.index.compressed as compressed

    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((9, 20)), rng.standard_normal((11, 20))
    expected = ((a[:, None] > 0) != (b[None] > 0)).sum(-1)
    monkeypatch.setattr(compressed, "_HAMMING_BLOCK_BYTES", 1)  # one query per block
    np.testing.assert_array_equal(hamming_distances(pack_signs(a), pack_signs(b)), expected)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown codec 'lsh'"):
        create_index("compressed", codec="lsh")
    with pytest.raises(ValueError, match="must divide the dimension"):
        create_index("compressed", codec="pq", pq_subspaces=5).build(
            np.ones((300, 32), np.float32), [str(i) for i in range(300)])
