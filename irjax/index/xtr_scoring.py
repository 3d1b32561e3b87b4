"""XTR-style scoring from retrieved tokens (Lee et al. 2023), and the exhaustive MaxSim reference.

XTR never loads candidate documents' token vectors: every query token retrieves its top-k' tokens
from a token index, candidates are the documents those tokens belong to, and a candidate is scored
only from the similarities already retrieved. When a candidate has no retrieved token for query
token i, its similarity is imputed as m_i, the smallest score retrieved for token i (an upper bound
on the true, unretrieved max). Score(d) = (1/n_q) sum_i s_i(d).

ColBERT-style MaxSim instead gathers all token vectors of each candidate and computes
(1/n_q) sum_i max_j <q_i, d_j>. With k' = every token in the index the two coincide, which is the
consistency check the tests use. The FLOP helpers quantify why XTR is cheaper: its cost does not
depend on document length or embedding dimension.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def xtr_score_candidates(token_scores: np.ndarray, token_doc_ids: np.ndarray,
                         num_query_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Score every document hit by a retrieved token, imputing missing similarities.

    token_scores [n_q, k']: similarity of each query token to its retrieved tokens.
    token_doc_ids [n_q, k']: document index of each retrieved token; negative = padding (ignored).
    num_query_tokens: rows at or past it are padded query tokens; defaults to n_q. Also the
    normaliser, so scores are averages over real query tokens.

    Returns (candidate doc ids ascending [C], scores [C]).
    """
    scores = np.asarray(token_scores, dtype=np.float64)
    doc_ids = np.asarray(token_doc_ids)
    if scores.shape != doc_ids.shape or scores.ndim != 2:
        raise ValueError(f"token_scores {scores.shape} and token_doc_ids {doc_ids.shape} must "
                         "be equal 2-D shapes")
    n_q = scores.shape[0] if num_query_tokens is None else int(num_query_tokens)
    if not 0 < n_q <= scores.shape[0]:
        raise ValueError(f"num_query_tokens must be in [1, {scores.shape[0]}], got {n_q}")
    scores, doc_ids = scores[:n_q], doc_ids[:n_q]
    valid = doc_ids >= 0
    if not valid.any():
        return np.zeros(0, dtype=np.int64), np.zeros(0)

    candidates, column = np.unique(doc_ids[valid], return_inverse=True)
    rows = np.nonzero(valid)[0]
    # Best retrieved similarity per (query token, candidate); -inf marks "nothing retrieved".
    best = np.full((n_q, candidates.size), -np.inf)
    np.maximum.at(best, (rows, column), scores[valid])
    # m_i: the k'-th (smallest) retrieved score of token i. A token with no valid retrievals has
    # no evidence at all; it contributes 0 rather than an undefined value.
    imputed = np.where(valid.any(axis=1), np.where(valid, scores, np.inf).min(axis=1), 0.0)
    filled = np.where(np.isneginf(best), imputed[:, None], best)
    return candidates.astype(np.int64), filled.sum(axis=0) / n_q


def maxsim_rerank(query_tokens: np.ndarray, candidate_doc_tokens: Sequence[np.ndarray],
                  dtype: type = np.float64) -> np.ndarray:
    """Exhaustive MaxSim [C]: mean over query tokens of the best inner product with each doc.

    float64 by default for reference checks; benchmarks pass float32, the precision XTR uses."""
    q = np.asarray(query_tokens, dtype=dtype)
    if q.ndim != 2 or q.shape[0] == 0:
        raise ValueError(f"query_tokens must be a non-empty [n_q, dim] array, got {q.shape}")
    if len(candidate_doc_tokens) == 0:
        return np.zeros(0)
    lengths = [len(d) for d in candidate_doc_tokens]
    if min(lengths) == 0:
        raise ValueError("MaxSim is undefined for a document with no tokens")
    # One matmul over the concatenated tokens, then a segmented max per document.
    flat = np.concatenate([np.asarray(d, dtype=dtype) for d in candidate_doc_tokens])
    sims = q @ flat.T  # [n_q, sum n_d]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    per_doc_max = np.maximum.reduceat(sims, starts, axis=1)  # [n_q, C]
    return per_doc_max.mean(axis=0)


def retrieve_tokens(query_tokens: np.ndarray, index_tokens: np.ndarray,
                    index_doc_ids: np.ndarray, k_prime: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force token retrieval: top-k' index tokens per query token.

    Stands in for a real token index (exact/FAISS/ScaNN) in tests and benchmarks. Returns
    (scores [n_q, k'] descending, doc ids [n_q, k']) in the form xtr_score_candidates expects.
    """
    q = np.asarray(query_tokens, dtype=np.float64)
    x = np.asarray(index_tokens, dtype=np.float64)
    ids = np.asarray(index_doc_ids)
    if not 0 < k_prime <= x.shape[0]:
        raise ValueError(f"k_prime must be in [1, {x.shape[0]}], got {k_prime}")
    sims = q @ x.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k_prime]
    return np.take_along_axis(sims, order, axis=1), ids[order]


def xtr_scoring_flops(num_query_tokens: int, k_prime: int, num_candidates: int) -> int:
    """Operations to score from retrieved tokens: one max per retrieved (token, doc) entry, plus
    filling and summing the [n_q, C] similarity table. Independent of doc length and dim; the
    token retrieval itself is the index's cost and is not counted here."""
    return num_query_tokens * k_prime + 2 * num_query_tokens * num_candidates


def maxsim_flops(num_query_tokens: int, doc_lengths: Sequence[int], dim: int) -> int:
    """Multiply-adds of exhaustive MaxSim, 2 * n_q * sum(n_d) * dim (max/mean are lower order)."""
    return 2 * num_query_tokens * int(sum(doc_lengths)) * dim
