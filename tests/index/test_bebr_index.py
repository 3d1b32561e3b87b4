"""The BEBR bits index: round-weighted Hamming scores equal the codes' weighted +-1 inner
products, bits and binariser round-trip through save/load, rerank over the whole corpus is exact
search, and malformed binarisers are refused."""
import numpy as np
import pytest

from irjax.index.base import IndexIntegrityError, load_index
from irjax.index.bebr_index import BEBRIndex, binarize, round_scores
from irjax.index.exact import ExactIndex

N, D, R, U = 300, 24, 3, 16


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((N, D)).astype(np.float32)
    queries = rng.standard_normal((6, D)).astype(np.float32)
    weights = {"enc_w": rng.standard_normal((R, D, U)), "enc_b": rng.standard_normal((R, U)) * 0.1,
               "dec_w": rng.standard_normal((R, U, D)) * 0.05, "dec_b": np.zeros((R, D)),
               "round_weights": np.array([0.5, 0.3, 0.2])}
    return vectors, queries, [f"d{i}" for i in range(N)], weights


def test_scores_are_round_weighted_sign_agreement(data):
    vectors, queries, _, weights = data
    q_bits, _ = binarize(queries, weights)
    d_bits, rec = binarize(vectors, weights)
    signs = lambda bits: np.unpackbits(bits, axis=1).astype(np.float32) * 2 - 1
    qs, ds = signs(q_bits).reshape(len(queries), R, U), signs(d_bits).reshape(N, R, U)
    expected = np.einsum("r,qru,nru->qn", weights["round_weights"], qs, ds) / U
    np.testing.assert_allclose(round_scores(q_bits, d_bits, weights["round_weights"]), expected,
                               rtol=1e-5, atol=1e-6)
    # the reconstruction decodes every round's signs
    manual = sum(ds[:, r] @ weights["dec_w"][r] + weights["dec_b"][r] for r in range(R))
    np.testing.assert_allclose(rec, manual, rtol=1e-4, atol=1e-4)


def test_bits_and_binarizer_round_trip_and_full_rerank_is_exact(data, tmp_path):
    vectors, queries, ids, weights = data
    index = BEBRIndex(rerank=N, binarizer=weights).build(vectors, ids)
    assert index.bytes_per_doc == R * U // 8
    exact = ExactIndex().build(vectors, ids).search(queries, 10)
    got = index.search(queries, 10)
    np.testing.assert_array_equal(got.indices, exact.indices)
    np.testing.assert_allclose(got.scores, exact.scores, rtol=1e-5)
    index.save(tmp_path / "bebr")
    loaded = load_index(tmp_path / "bebr")
    for key, value in index.binarizer.items():
        np.testing.assert_array_equal(loaded.binarizer[key], value)
    np.testing.assert_array_equal(loaded._bits, index._bits)
    np.testing.assert_array_equal(loaded._bits, binarize(vectors, weights)[0])
    np.testing.assert_array_equal(loaded.search(queries, 10).indices, exact.indices)
    bits_only = BEBRIndex(binarizer=weights).build(vectors, ids)
    expected = round_scores(binarize(queries, weights)[0], bits_only._bits, weights["round_weights"])
    top = bits_only.search(queries, 5)
    np.testing.assert_allclose(top.scores, -np.sort(-expected, axis=1)[:, :5], rtol=1e-6)


def test_bad_input_is_rejected(data, tmp_path):
    vectors, _, ids, weights = data
    with pytest.raises(ValueError, match="needs the trained binariser"):
        BEBRIndex().build(vectors, ids)
    with pytest.raises(ValueError, match="lack"):
        BEBRIndex(binarizer={k: v for k, v in weights.items() if k != "dec_w"})
    with pytest.raises(ValueError, match="dec_b has shape"):
        BEBRIndex(binarizer={**weights, "dec_b": np.zeros((R, D + 1))})
    with pytest.raises(ValueError, match="multiple of 8"):
        BEBRIndex(binarizer={**weights, "enc_w": weights["enc_w"][:, :, :12],
                             "enc_b": weights["enc_b"][:, :12], "dec_w": weights["dec_w"][:, :12]})
    with pytest.raises(ValueError, match="dimension"):
        BEBRIndex(binarizer=weights).build(vectors[:, :10], ids)
    with pytest.raises(ValueError, match="rerank"):
        BEBRIndex(rerank=0, binarizer=weights)
    BEBRIndex(binarizer=weights).build(vectors, ids).save(tmp_path / "b")
    (tmp_path / "b" / "bits.npy").write_bytes(b"not an array")
    with pytest.raises(IndexIntegrityError):
        load_index(tmp_path / "b")
