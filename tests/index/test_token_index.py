"""TokenIndex must be chunking-invariant, match brute-force token retrieval, store int8 compactly
and accurately, persist exactly, reject truncated files, and agree with MaxSim under XTR."""
import dataclasses

import numpy as np
import pytest

from irjax.index.base import IndexIntegrityError
from irjax.index.quantization import quantize_int8
from irjax.index.token_index import TokenIndex
from irjax.index.xtr_scoring import maxsim_rerank, retrieve_tokens


def _clustered_docs(num_docs: int, dim: int, seed: int) -> list[np.ndarray]:
    """Docs with 5-20 tokens each, tokens drawn around 30 shared unit-norm centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, dim))
    docs = []
    for _ in range(num_docs):
        n = int(rng.integers(5, 21))
        x = centres[rng.integers(0, 30, n)] + 0.3 * rng.standard_normal((n, dim))
        docs.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return docs


def _chunks(docs: list[np.ndarray], size: int):
    for start in range(0, len(docs), size):
        part = docs[start:start + size]
        yield [f"d{start + i}" for i in range(len(part))], part


def _flat(docs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate(docs),
            np.concatenate([np.full(len(d), i) for i, d in enumerate(docs)]))


@pytest.fixture(scope="module")
def docs() -> list[np.ndarray]:
    return _clustered_docs(60, 16, seed=0)


@pytest.fixture(scope="module")
def exact_index(docs) -> TokenIndex:
    return TokenIndex.build_streaming(_chunks(docs, 7), kind="exact")


def test_chunking_does_not_change_the_index(docs, exact_index):
    single = TokenIndex.build_streaming(_chunks(docs, len(docs)), kind="exact")
    assert single.doc_ids == exact_index.doc_ids == [f"d{i}" for i in range(len(docs))]
    queries = _clustered_docs(1, 16, seed=1)[0]
    for a, b in zip(single.search_tokens(queries, 25), exact_index.search_tokens(queries, 25)):
        np.testing.assert_array_equal(a, b)
    # Everything but the process-lifetime peak RSS must be identical.
    assert single.stats == dataclasses.replace(exact_index.stats,
                                               peak_rss_bytes=single.stats.peak_rss_bytes)


def test_exact_search_matches_brute_force(docs, exact_index):
    tokens, owners = _flat(docs)
    queries = _clustered_docs(3, 16, seed=2)[0]
    scores, doc_idx = exact_index.search_tokens(queries, 40)
    ref_scores, ref_docs = retrieve_tokens(queries, tokens, owners, 40)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    np.testing.assert_array_equal(doc_idx, ref_docs)
    s = exact_index.stats
    assert (s.num_docs, s.num_tokens, s.dim) == (len(docs), len(tokens), 16)
    assert s.bytes_per_token == 64 and s.raw_float32_bytes == 64 * len(tokens)
    assert s.peak_rss_bytes > 10 * 2**20  # KiB converted to bytes: a Python+JAX process is > 10 MB


def test_doc_tokens_round_trip(docs, exact_index):
    for i in (0, 17, len(docs) - 1):
        np.testing.assert_array_equal(exact_index.doc_tokens(i), docs[i])
    with pytest.raises(IndexError):
        exact_index.doc_tokens(len(docs))


def test_int8_storage_is_smaller_and_accurate(docs, exact_index):
    index = TokenIndex.build_streaming(_chunks(docs, 9), kind="exact", dtype="int8")
    assert index.stats.bytes_per_token == 16 + 4 < exact_index.stats.bytes_per_token
    assert index.stats.stored_matrix_bytes == 20 * index.num_tokens
    q = _clustered_docs(1, 16, seed=3)[0]
    for i in (0, 30, 59):
        approx, exact = q @ index.doc_tokens(i).T, q @ docs[i].T
        assert np.abs(approx - exact).max() < 0.02  # unit vectors, step max|x|/127 per component
        assert not np.array_equal(approx, exact)  # really quantised
    # Search still uses float32 vectors, so it is exact.
    np.testing.assert_array_equal(index.search_tokens(q, 10)[1],
                                  exact_index.search_tokens(q, 10)[1])
    qz, scale = quantize_int8(np.zeros((2, 4)))
    assert (qz == 0).all() and (scale == 1).all()


def test_scann_recall_and_save_load(tmp_path):
    docs = _clustered_docs(250, 32, seed=4)  # ~3,100 tokens
    index = TokenIndex.build_streaming(_chunks(docs, 50), kind="scann", dtype="int8")
    tokens, owners = _flat(docs)
    queries = np.concatenate(_clustered_docs(4, 32, seed=5))
    k = 20
    scores, _ = index.search_tokens(queries, k)
    ref_scores, _ = retrieve_tokens(queries, tokens, owners, k)
    # Recall by score threshold (ties between near-identical tokens make row ids ambiguous).
    recall = (scores >= ref_scores[:, -1:] - 1e-5).mean()
    assert recall >= 0.95
    index.save(tmp_path / "tok")
    loaded = TokenIndex.load(tmp_path / "tok")
    assert loaded.doc_ids == index.doc_ids and loaded.stats == index.stats
    for a, b in zip(loaded.search_tokens(queries, k), index.search_tokens(queries, k)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.doc_tokens(123), index.doc_tokens(123))


def test_truncated_file_is_rejected(exact_index, tmp_path):
    target = tmp_path / "idx"
    exact_index.save(target)
    loaded = TokenIndex.load(target)
    np.testing.assert_array_equal(loaded.doc_tokens(5), exact_index.doc_tokens(5))
    path = target / "tokens.bin"
    path.write_bytes(path.read_bytes()[:-64])
    with pytest.raises(IndexIntegrityError, match="tokens.bin"):
        TokenIndex.load(target)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="dim"):
        TokenIndex.build_streaming([(["a", "b"], [np.ones((2, 4)), np.ones((2, 5))])], kind="exact")
    with pytest.raises(ValueError, match="unique"):
        TokenIndex.build_streaming([(["a"], [np.ones((2, 4))]), (["a"], [np.ones((1, 4))])],
                                   kind="exact")
    with pytest.raises(ValueError, match="no documents"):
        TokenIndex.build_streaming([], kind="exact")


def test_xtr_search_equals_maxsim_with_exhaustive_k_prime():
    rng = np.random.default_rng(6)
    docs = [rng.standard_normal((int(rng.integers(2, 7)), 8)).astype(np.float32)
            for _ in range(25)]
    query = rng.standard_normal((3, 8)).astype(np.float32)
    docs[11] = np.concatenate([query * 3.0, docs[11]])  # planted: matches every query token
    index = TokenIndex.build_streaming(_chunks(docs, 6), kind="exact")
    ids, scores = index.xtr_search(query, k_prime=index.num_tokens, top_k=5)
    maxsim = maxsim_rerank(query, [index.doc_tokens(i) for i in range(len(docs))])
    order = np.argsort(-maxsim, kind="stable")[:5]
    assert ids[0] == "d11"
    assert ids == [f"d{i}" for i in order]
    np.testing.assert_allclose(scores, maxsim[order], rtol=1e-5)
