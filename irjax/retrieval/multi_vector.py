"""Brute-force multi-vector retrieval for evaluating XTR/ColBERT models on a BEIR collection.

No token index is built: the corpus is encoded once into per-document token vectors (padding
and punctuation dropped with `token_mask`), then every query is scored against the whole corpus.

- 'maxsim': exhaustive ColBERT MaxSim (`maxsim_scores`), the upper bound on quality. Documents
  are sorted by length and cut into fixed-size chunks, so memory stays bounded and only a few
  chunk shapes compile; a running top-k per query is merged after each chunk.
- 'xtr': what an XTR token index would return, computed exactly: each query token keeps its
  top-k' similarities over all corpus tokens (chunked, running top-k' on device), and documents
  are scored from those alone with missing-similarity imputation (`xtr_score_candidates`).

With k' >= the number of corpus tokens both modes give the same scores, which the tests check.
"""
from __future__ import annotations

import functools
import logging
import string
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from irjax.data.batching import length_buckets, padded_rows
from irjax.data.collection import Collection
from irjax.data.tokenization import WordPieceTokenizer, pad_sequences
from irjax.data.runs import Run
from irjax.index.xtr_scoring import xtr_score_candidates
from irjax.models.multi_vector import MultiVectorModel, maxsim_scores
from irjax.models.token_encoder import token_mask

log = logging.getLogger(__name__)

MODES = ("maxsim", "xtr")


def punctuation_ids(tokenizer: WordPieceTokenizer) -> tuple[int, ...]:
    """Vocabulary ids of single ASCII punctuation characters (ColBERT's document skiplist)."""
    ids = (tokenizer._tok.token_to_id(c) for c in string.punctuation)
    return tuple(sorted(int(i) for i in ids if i is not None))


class MaxSimRetriever:
    """Retriever protocol over a `MultiVectorModel`'s params; see the module docstring."""

    def __init__(self, model: MultiVectorModel, params: Any, tokenizer: WordPieceTokenizer,
                 doc_max_length: int = 256, query_max_length: int = 64, batch_size: int = 32,
                 mode: str = "maxsim", k_prime: int = 1024, doc_chunk: int = 256,
                 token_chunk: int = 65536, name: str | None = None,
                 doc_skip_ids: Sequence[int] | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if k_prime < 1:
            raise ValueError(f"k_prime must be >= 1, got {k_prime}")
        self.model = model
        self.params = jax.device_put(params)
        self.tokenizer = tokenizer
        self.doc_max_length = doc_max_length
        self.query_max_length = query_max_length
        self.batch_size = batch_size
        self.mode = mode
        self.k_prime = k_prime
        self.doc_chunk = doc_chunk
        self.token_chunk = token_chunk
        self.doc_skip_ids = tuple(punctuation_ids(tokenizer) if doc_skip_ids is None else doc_skip_ids)
        self.name = name or f"multi-vector+{mode}"
        self.timings: dict[str, float] = {}
        self._encode = jax.jit(model.encode)
        self._corpus_cache: dict[str, list[np.ndarray]] = {}

    def corpus_vectors(self, collection: Collection) -> list[np.ndarray]:
        """Token vectors of every document, encoded once per collection and kept, so several
        inference paths (XTR, MaxSim, MUVERA) evaluated on one retriever share the encoding."""
        key = collection.fingerprint()
        if key not in self._corpus_cache:
            start = time.perf_counter()
            self._corpus_cache[key] = self.encode(
                [d.contents for d in collection.documents], self.doc_max_length,
                self.doc_skip_ids, progress=f"encoding {collection.name} corpus tokens")
            self.timings["encode_corpus_s"] = time.perf_counter() - start
        return self._corpus_cache[key]

    def query_vectors(self, queries: dict[str, str]) -> list[np.ndarray]:
        start = time.perf_counter()
        vectors = self.encode(list(queries.values()), self.query_max_length,
                              progress="encoding queries")
        self.timings["encode_queries_s"] = time.perf_counter() - start
        return vectors

    # -- encoding ------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], max_length: int, skip_ids: Sequence[int] = (),
               progress: str | None = None) -> list[np.ndarray]:
        """Per text, float32 [n_tokens, dim] vectors of the tokens that take part in scoring."""
        from tqdm.auto import tqdm

        seqs = self.tokenizer.tokenize(list(texts), max_length)
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        out: list[np.ndarray] = [np.zeros((0, self.model.dim), np.float32)] * len(seqs)
        with tqdm(total=len(seqs), desc=progress, unit="text", disable=progress is None) as bar:
            for bucket in length_buckets(lengths, self.batch_size, 32, max_length):
                batch = pad_sequences([seqs[j] for j in bucket.indices], self.tokenizer.pad_id,
                                      pad_to=bucket.length,
                                      rows=padded_rows(len(bucket), self.batch_size))
                vectors = np.asarray(self._encode(self.params, batch.ids, batch.mask), np.float32)
                keep = np.asarray(token_mask(batch.ids, batch.mask, skip_ids)) > 0
                for row, j in enumerate(bucket.indices):
                    out[int(j)] = vectors[row][keep[row]]
                bar.update(len(bucket))
        return out

    def _padded_queries(self, queries: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Queries as [n, Lq, dim] vectors and a 0/1 mask (query tokens form a prefix)."""
        width = max(1, max((len(q) for q in queries), default=1))
        vectors = np.zeros((len(queries), width, self.model.dim), np.float32)
        mask = np.zeros((len(queries), width), np.float32)
        for i, q in enumerate(queries):
            vectors[i, : len(q)] = q
            mask[i, : len(q)] = 1.0
        return vectors, mask

    # -- the Retriever protocol ----------------------------------------------------------------
    def retrieve(self, collection: Collection, queries: dict[str, str], k: int) -> Run:
        docs = self.corpus_vectors(collection)
        query_vectors = self.query_vectors(queries)
        start = time.perf_counter()
        if self.mode == "maxsim":
            ids, scores = self._maxsim_top_k(query_vectors, docs, k)
        else:
            ids, scores = self._xtr_top_k(query_vectors, docs, k)
        self.timings["score_s"] = time.perf_counter() - start
        doc_ids = collection.doc_ids
        run: Run = {}
        for qi, query_id in enumerate(queries):
            run[query_id] = {doc_ids[int(d)]: float(s) for d, s in zip(ids[qi], scores[qi]) if d >= 0}
        return run

    # -- exhaustive MaxSim ---------------------------------------------------------------------
    def _maxsim_top_k(self, queries: list[np.ndarray], docs: list[np.ndarray], k: int
                      ) -> tuple[np.ndarray, np.ndarray]:
        """[nq, k] doc indices (-1 = none) and scores, best first, over the whole corpus."""
        q, q_mask = self._padded_queries(queries)
        q, q_mask = jnp.asarray(q), jnp.asarray(q_mask)
        best_ids = np.full((len(queries), k), -1, np.int64)
        best = np.full((len(queries), k), -np.inf, np.float32)
        order = np.argsort([len(d) for d in docs], kind="stable")
        chunk = max(1, self.doc_chunk)
        for start in range(0, len(order), chunk):
            members = order[start : start + chunk]
            width = max(1, -(-max(len(docs[i]) for i in members) // 32) * 32)
            d = np.zeros((chunk, width, self.model.dim), np.float32)
            d_mask = np.zeros((chunk, width), np.float32)
            for row, i in enumerate(members):
                d[row, : len(docs[i])] = docs[i]
                d_mask[row, : len(docs[i])] = 1.0
            scores = np.empty((len(queries), chunk), np.float32)
            for qs in range(0, len(queries), self.batch_size):
                scores[qs : qs + self.batch_size] = np.asarray(_maxsim_jit(
                    q[qs : qs + self.batch_size], q_mask[qs : qs + self.batch_size], d, d_mask))
            scores[:, len(members):] = -np.inf
            ids = np.full(chunk, -1, np.int64)
            ids[: len(members)] = members
            best, best_ids = _merge_top_k(best, best_ids, scores, np.broadcast_to(ids, scores.shape), k)
        return best_ids, best

    # -- XTR: exact token retrieval, then scoring from retrieved tokens -------------------------
    def _xtr_top_k(self, queries: list[np.ndarray], docs: list[np.ndarray], k: int
                   ) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.array([len(d) for d in docs], np.int64)
        tokens = np.concatenate([np.zeros((0, self.model.dim), np.float32), *docs])
        owner = np.repeat(np.arange(len(docs)), lengths)
        k_prime = min(self.k_prime, len(tokens))
        chunk = min(self.token_chunk, len(tokens))
        padded = -(-len(tokens) // chunk) * chunk
        token_pad = np.zeros((padded, self.model.dim), np.float32)
        token_pad[: len(tokens)] = tokens
        owner_pad = np.full(padded, -1, np.int32)
        owner_pad[: len(tokens)] = owner
        token_pad = jnp.asarray(token_pad.reshape(-1, chunk, self.model.dim))
        owner_pad = jnp.asarray(owner_pad.reshape(-1, chunk))
        padded_queries, _ = self._padded_queries(queries)   # one compiled shape for all queries
        best_ids = np.full((len(queries), k), -1, np.int64)
        best = np.full((len(queries), k), -np.inf, np.float32)
        for qi, q in enumerate(queries):
            if len(q) == 0:
                continue
            sims, hit = _token_top_k(jnp.asarray(padded_queries[qi]), token_pad, owner_pad, k_prime)
            candidates, scores = xtr_score_candidates(np.asarray(sims), np.asarray(hit), len(q))
            top = np.argsort(-scores, kind="stable")[:k]
            best_ids[qi, : len(top)] = candidates[top]
            best[qi, : len(top)] = scores[top]
        return best_ids, best


@jax.jit
def _maxsim_jit(q: jax.Array, q_mask: jax.Array, d: jax.Array, d_mask: jax.Array) -> jax.Array:
    return maxsim_scores(q, q_mask, d, d_mask)


def _merge_top_k(best: np.ndarray, best_ids: np.ndarray, scores: np.ndarray, ids: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k highest of (running top-k, new chunk) per row, sorted descending."""
    all_scores = np.concatenate([best, scores], axis=1)
    all_ids = np.concatenate([best_ids, ids], axis=1)
    order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(all_scores, order, 1), np.take_along_axis(all_ids, order, 1)


@functools.partial(jax.jit, static_argnames=("k_prime",))
def _token_top_k(q: jax.Array, tokens: jax.Array, owner: jax.Array, k_prime: int
                 ) -> tuple[jax.Array, jax.Array]:
    """Top-k' corpus tokens per query token [n_q, k']: scores and owning doc (-1 = padding)."""
    n_q = q.shape[0]
    init = (jnp.full((n_q, k_prime), -jnp.inf, jnp.float32), jnp.full((n_q, k_prime), -1, jnp.int32))

    def step(carry: tuple[jax.Array, jax.Array], chunk: tuple[jax.Array, jax.Array]
             ) -> tuple[tuple[jax.Array, jax.Array], None]:
        vectors, doc = chunk
        sims = jnp.where(doc[None, :] >= 0, q.astype(jnp.float32) @ vectors.T, -jnp.inf)
        top, where = lax.top_k(sims, min(k_prime, sims.shape[1]))
        merged = jnp.concatenate([carry[0], top], axis=1)
        merged_ids = jnp.concatenate([carry[1], doc[where]], axis=1)
        keep, pos = lax.top_k(merged, k_prime)
        return (keep, jnp.take_along_axis(merged_ids, pos, axis=1)), None

    (scores, ids), _ = lax.scan(step, init, (tokens, owner))
    return scores, jnp.where(jnp.isneginf(scores), -1, ids)
