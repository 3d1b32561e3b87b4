"""XTR scoring must impute exactly, equal MaxSim under exhaustive retrieval, and rank sensibly."""
import numpy as np
import pytest

from irjax.index.xtr_scoring import (maxsim_flops, maxsim_rerank, retrieve_tokens,
                                     xtr_score_candidates, xtr_scoring_flops)


def _corpus(num_docs: int, dim: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(1, 6)), dim)) for _ in range(num_docs)]


def _flatten(docs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.concatenate([np.full(len(d), i) for i, d in enumerate(docs)])
    return np.concatenate(docs), ids


def test_imputation_hand_made():
    # Query token 0 retrieved docs 0 (0.9, 0.5) and 1 (0.7); token 1 retrieved only doc 0 (0.8),
    # doc 2 (0.6), doc 0 again (0.3).
    scores = np.array([[0.9, 0.7, 0.5], [0.8, 0.6, 0.3]])
    ids = np.array([[0, 1, 0], [0, 2, 0]])
    cands, got = xtr_score_candidates(scores, ids)
    np.testing.assert_array_equal(cands, [0, 1, 2])
    # doc 0: max per token 0.9, 0.8. doc 1: 0.7, imputed m_1 = 0.3. doc 2: imputed m_0 = 0.5, 0.6.
    np.testing.assert_allclose(got, [(0.9 + 0.8) / 2, (0.7 + 0.3) / 2, (0.5 + 0.6) / 2])


def test_padding_is_ignored():
    scores = np.array([[0.9, -5.0], [0.4, 0.2], [7.0, 7.0]])
    ids = np.array([[3, -1], [3, 8], [3, 3]])  # -1 is a padded retrieval, row 2 a padded token
    cands, got = xtr_score_candidates(scores, ids, num_query_tokens=2)
    np.testing.assert_array_equal(cands, [3, 8])
    # m_0 = 0.9 (the padded -5 must not be the minimum); row 2 excluded entirely.
    np.testing.assert_allclose(got, [(0.9 + 0.4) / 2, (0.9 + 0.2) / 2])


def test_exhaustive_retrieval_equals_maxsim():
    docs = _corpus(12, 8, seed=0)
    tokens, ids = _flatten(docs)
    query = np.random.default_rng(1).standard_normal((5, 8))
    scores, doc_ids = retrieve_tokens(query, tokens, ids, k_prime=len(tokens))
    cands, xtr = xtr_score_candidates(scores, doc_ids)
    np.testing.assert_array_equal(cands, np.arange(12))
    reference = maxsim_rerank(query, docs)
    np.testing.assert_allclose(xtr, reference, rtol=1e-12)
    naive = [np.mean([max(q @ t for t in d) for q in query]) for d in docs]
    np.testing.assert_allclose(reference, naive, rtol=1e-12)


def test_imputed_score_upper_bounds_partial_retrieval():
    """Imputation uses the k'-th score, which bounds every unretrieved similarity from above."""
    docs = _corpus(30, 8, seed=2)
    tokens, ids = _flatten(docs)
    query = np.random.default_rng(3).standard_normal((4, 8))
    cands, xtr = xtr_score_candidates(*retrieve_tokens(query, tokens, ids, k_prime=10))
    exact = maxsim_rerank(query, [docs[c] for c in cands])
    assert np.all(xtr >= exact - 1e-12)
    assert len(cands) < len(docs)


def test_planted_ranking_matches_maxsim():
    rng = np.random.default_rng(4)
    dim = 16
    query = rng.standard_normal((4, dim))
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    docs = [0.3 * rng.standard_normal((5, dim)) / np.sqrt(dim) for _ in range(20)]
    # Doc i (i < 4) contains near copies of the first 4 - i query tokens: a strict quality order.
    for i in range(4):
        docs[i][: 4 - i] = query[: 4 - i] + 0.01 * rng.standard_normal((4 - i, dim))
    tokens, ids = _flatten(docs)
    cands, xtr = xtr_score_candidates(*retrieve_tokens(query, tokens, ids, k_prime=8))
    exact = maxsim_rerank(query, [docs[c] for c in cands])
    top_xtr = cands[np.argsort(-xtr, kind="stable")[:4]]
    top_exact = cands[np.argsort(-exact, kind="stable")[:4]]
    np.testing.assert_array_equal(top_xtr, [0, 1, 2, 3])
    np.testing.assert_array_equal(top_xtr, top_exact)


def test_flop_counts():
    assert maxsim_flops(32, [100, 50], 128) == 2 * 32 * 150 * 128
    assert xtr_scoring_flops(32, 100, 40) == 32 * 100 + 2 * 32 * 40
    assert xtr_scoring_flops(32, 100, 40) < maxsim_flops(32, [100] * 40, 128)


def test_validation():
    with pytest.raises(ValueError):
        xtr_score_candidates(np.zeros((2, 3)), np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError):
        maxsim_rerank(np.ones((2, 3)), [np.zeros((0, 3))])
    cands, scores = xtr_score_candidates(np.zeros((1, 2)), -np.ones((1, 2), dtype=int))
    assert cands.size == 0 and scores.size == 0


def test_retrieve_tokens_is_exact_top_k():
    rng = np.random.default_rng(5)
    tokens, ids = rng.standard_normal((40, 6)), rng.integers(0, 9, size=40)
    query = rng.standard_normal((3, 6))
    scores, doc_ids = retrieve_tokens(query, tokens, ids, k_prime=7)
    sims = query @ tokens.T
    for i in range(3):
        expected_rows = np.argsort(-sims[i])[:7]
        np.testing.assert_allclose(scores[i], sims[i, expected_rows])
        np.testing.assert_array_equal(doc_ids[i], ids[expected_rows])
