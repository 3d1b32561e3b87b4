"""Tiny deterministic stand-ins for a decoder, with the `log_prob_fn` interface, and a
brute-force scorer that gives every docid its exact sequence log-probability."""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from irjax.index.docid_trie import EOS_ID


def linear_context(vocab: int, num_queries: int, seed: int, dim: int = 8) -> tuple:
    """Random weights for `linear_model`: embeddings, per-query vectors and an output layer."""
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.standard_normal((vocab, dim)), jnp.float32),
            jnp.asarray(rng.standard_normal((num_queries, dim)), jnp.float32),
            jnp.asarray(rng.standard_normal((dim, vocab)) * 1.5, jnp.float32))


def linear_model(ids: Any, step: Any, context: Any) -> Any:
    """A prefix-dependent toy decoder: position-weighted embeddings of ids[:, :step + 1] plus the
    row's query vector, through tanh and a linear layer. Rows are query-major. Runs on numpy
    inputs too, which keeps the brute-force reference free of per-shape jax compilation."""
    xp = np if isinstance(ids, np.ndarray) else jnp
    embed, queries, out = context
    positions = xp.arange(ids.shape[1])
    weight = xp.where(positions <= step, xp.cos(0.9 * positions + 0.5), 0.0)
    hidden = xp.einsum("nld,l->nd", embed[ids], weight)
    query = xp.repeat(queries, ids.shape[0] // queries.shape[0], axis=0)
    return xp.tanh(hidden + query) @ out


def bigram_model(ids: Any, step: Any, context: Any) -> Any:
    """Logits from a table [max_steps, V, V] indexed by (step, previous token); numpy or jax."""
    return context[step, ids[:, step]]


def brute_force_scores(log_prob_fn, docids: Sequence[tuple[int, ...]], length: int,
                       context: Any) -> np.ndarray:
    """Exact log-prob of every docid followed by EOS (one query's context), float64 [D]; the
model runs in numpy float64 as an independent reference for the float32 jax search."""
    seqs = np.zeros((len(docids), length), np.int32)
    for i, docid in enumerate(docids):
        seqs[i, :len(docid) + 1] = [*docid, EOS_ID]
    inputs = np.pad(seqs[:, :-1], ((0, 0), (1, 0)))
    context = jax.tree.map(lambda x: np.asarray(x, np.float64), context)
    total = np.zeros(len(docids))
    for step in range(length):
        logits = np.asarray(log_prob_fn(inputs, step, context), np.float64)
        logp = logits - _logsumexp(logits)
        real = seqs[:, step] > 0
        total[real] += logp[real, seqs[real, step]]
    return total


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=-1, keepdims=True)
    return top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True))
