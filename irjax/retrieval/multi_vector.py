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

On several processes each process encodes and scores its own contiguous share of the documents
(`local_rows`), queries are encoded split over the processes and gathered, and the per-process
results merge exactly: MaxSim top-k lists by (score, row), XTR's per-query-token top-k' lists
likewise before the imputation, so the run equals the one-process run.
"""
from __future__ import annotations

import copy
import functools
import logging
import string
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from irjax.data.collection import Collection
from irjax.data.runs import Run
from irjax.data.tokenization import WordPieceTokenizer
from irjax.index.sharded import merge_top_k
from irjax.index.xtr_scoring import xtr_score_candidates
from irjax.models.multi_vector import MultiVectorModel, maxsim_scores
from irjax.models.token_encoder import token_mask
from irjax.parallel.processes import allgather_arrays, is_logging_process, process_shard
from irjax.retrieval.mesh_encoding import MeshEncoder

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
        self._params = params
        self._encoders: dict[tuple[int, tuple[int, ...], bool], MeshEncoder] = {}
        self._corpus_cache: dict[str, list[np.ndarray]] = {}
        self._corpus_counts: dict[str, np.ndarray] = {}
        self._last_corpus: str | None = None
        self._prune_above: float | None = None   # set on `pruned` views only

    def local_rows(self, collection: Collection) -> range:
        """This process's contiguous share of the corpus rows (all of them on one process)."""
        share = process_shard(len(collection.documents))
        return range(share.start, share.stop)

    def corpus_vectors(self, collection: Collection) -> list[np.ndarray]:
        """Token vectors of this process's documents (`local_rows`), encoded once per collection
        and kept, so several inference paths (XTR, MaxSim, MUVERA) evaluated on one retriever
        share the encoding."""
        key = collection.fingerprint()
        if key not in self._corpus_cache:
            start = time.perf_counter()
            rows = self.local_rows(collection)
            counts: list[np.ndarray] = []
            self._corpus_cache[key] = self.encode(
                [d.contents for d in collection.documents[rows.start:rows.stop]],
                self.doc_max_length, self.doc_skip_ids,
                progress=f"encoding {collection.name} corpus tokens", document=True,
                counts=counts)
            local = np.asarray(counts, np.int64).reshape(-1, 3)
            self._corpus_counts[key] = (np.concatenate(allgather_arrays(local))
                                        if jax.process_count() > 1 else local)
            self.timings["encode_corpus_s"] = time.perf_counter() - start
        self._last_corpus = key
        if self._prune_above is None:
            return self._corpus_cache[key]
        pruned_key = f"{key}/gate>{self._prune_above!r}"
        if pruned_key not in self._corpus_cache:
            self._corpus_cache[pruned_key] = [
                v[np.linalg.norm(v, axis=1) > self._prune_above] for v in self._corpus_cache[key]]
        return self._corpus_cache[pruned_key]

    def gate_quantile(self, collection: Collection, fraction: float) -> float:
        """The gate below which `fraction` of the stored document vectors lie (their norms,
        over every process's documents): the threshold that drops that share of the index."""
        if not 0 <= fraction < 1:
            raise ValueError(f"fraction must be in [0, 1), got {fraction}")
        norms = np.concatenate([np.zeros(0, np.float32)] + [
            np.linalg.norm(v, axis=1) for v in self.corpus_vectors(collection)])
        if jax.process_count() > 1:
            norms = np.concatenate(allgather_arrays(norms))
        return float(np.quantile(norms, fraction)) if len(norms) else 0.0

    def pruned(self, threshold: float) -> "MaxSimRetriever":
        """A view of this retriever whose index keeps only document vectors with gate >
        `threshold`, sharing this retriever's encodings (nothing is encoded twice).

        A gated vector is its gate times a unit vector, so its norm is the gate: a higher
        threshold than the model's is applied to the stored vectors alone. This is how one
        trained model gives a curve of index size against quality."""
        if not self.model.gate:
            raise ValueError("pruned() needs a model with a gate (MultiVectorModel.gate=True)")
        if threshold < self.model.gate_threshold:
            raise ValueError(f"threshold {threshold} is below the model's gate_threshold "
                             f"{self.model.gate_threshold}: those vectors were never stored")
        view = copy.copy(self)
        view._prune_above = float(threshold)
        view.timings = {}
        view.name = f"{self.name}@gate>{threshold:g}"
        return view

    def corpus_vectors_cached(self) -> list[np.ndarray]:
        """The vectors `corpus_vectors` last returned for this view (its cached encoding)."""
        key = self._last_corpus
        if self._prune_above is not None:
            key = f"{key}/gate>{self._prune_above!r}"
        return self._corpus_cache[key]

    def index_stats(self) -> dict[str, Any]:
        """Size of the last encoded corpus: mean vectors per document as ColBERT would store them
        (tokens, punctuation skipped), after word pooling ('words', = tokens without pooling)
        and after the gate ('kept', what is stored), and the float32 bytes per document of
        the stored vectors and of the token vectors. {} before any corpus was encoded."""
        if self._last_corpus is None:
            return {}
        counts = self._corpus_counts[self._last_corpus].astype(np.float64)
        if self._prune_above is not None:   # kept vectors of this view (one process's share)
            kept = np.asarray([len(v) for v in self.corpus_vectors_cached()], np.float64)
            if jax.process_count() > 1:
                kept = np.concatenate(allgather_arrays(kept))
            counts = np.concatenate([counts[:, :2], kept[:, None]], axis=1)
        mean = counts.mean(axis=0) if len(counts) else np.zeros(3)
        per_vector = 4 * self.model.dim
        return {"bytes_per_doc": float(mean[2] * per_vector),
                "token_bytes_per_doc": float(mean[0] * per_vector),
                "vectors_per_doc": {"tokens": float(mean[0]), "words": float(mean[1]),
                                    "kept": float(mean[2])},
                "vector_dtype": "float32", "dim": self.model.dim, "pooling": self.model.pooling,
                "gate": self.model.gate,
                "gate_threshold": (self.model.gate_threshold if self._prune_above is None
                                   else self._prune_above)}

    def query_vectors(self, queries: dict[str, str]) -> list[np.ndarray]:
        """Token vectors of every query: each process encodes its share, all get every one."""
        start = time.perf_counter()
        texts = list(queries.values())
        share = texts[process_shard(len(texts))]
        vectors = gather_ragged(self.encode(share, self.query_max_length,
                                            progress="encoding queries"), self.model.dim)
        self.timings["encode_queries_s"] = time.perf_counter() - start
        return vectors

    # -- encoding ------------------------------------------------------------------------------
    def _mesh_encoder(self, max_length: int, skip_ids: Sequence[int], document: bool
                      ) -> MeshEncoder:
        key = (max_length, tuple(skip_ids), document)
        if key not in self._encoders:
            model, skip = self.model, tuple(skip_ids)

            def device_fn(params: Any, ids: jax.Array, mask: jax.Array
                          ) -> tuple[jax.Array, jax.Array, jax.Array]:
                out = model.represent(params, ids, mask, skip, document=document,
                                      threshold=model.gate_threshold)
                counts = jnp.stack([jnp.sum(token_mask(ids, mask, skip), axis=1),
                                    jnp.sum(out.vectors_mask, axis=1), jnp.sum(out.keep, axis=1)],
                                   axis=1)
                return out.vectors, out.keep, counts

            self._encoders[key] = MeshEncoder(
                device_fn, self._params, pad_id=self.tokenizer.pad_id,
                tokenize=self.tokenizer.tokenize, max_length=max_length,
                per_device_batch=self.batch_size)
        return self._encoders[key]

    def encode(self, texts: Sequence[str], max_length: int, skip_ids: Sequence[int] = (),
               progress: str | None = None, document: bool = False,
               counts: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Per text, float32 [n, dim] vectors that take part in scoring (tokens, or words and
        only the gate-kept ones on documents: `MultiVectorModel.represent`), encoded
        data-parallel over this process's devices (mesh_encoding.py). `counts`, when given,
        receives per text [tokens, vectors before the gate, vectors kept]."""
        from tqdm.auto import tqdm

        out: list[np.ndarray] = [np.zeros((0, self.model.dim), np.float32)] * len(texts)
        sizes = np.zeros((len(texts), 3), np.int64)
        with tqdm(total=len(texts), desc=progress, unit="text",
                  disable=progress is None or not is_logging_process()) as bar:
            outputs, batches = self._mesh_encoder(max_length, skip_ids, document).encode(
                list(texts), bar.update)
        for (vectors, keep, row_counts), batch in zip(outputs, batches):
            for row, j in enumerate(batch.rows):
                out[int(j)] = np.asarray(vectors[row], np.float32)[keep[row] > 0]
                sizes[int(j)] = np.rint(np.asarray(row_counts[row])).astype(np.int64)
        if counts is not None:
            counts.extend(sizes)
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
        offset = self.local_rows(collection).start
        query_vectors = self.query_vectors(queries)
        start = time.perf_counter()
        if self.mode == "maxsim":
            ids, scores = self._maxsim_top_k(query_vectors, docs, k)
            ids = np.where(ids >= 0, ids + offset, -1)
            if jax.process_count() > 1:
                scores, ids = merge_top_k(list(zip(allgather_arrays(scores),
                                                   allgather_arrays(ids))), k)
        else:
            ids, scores = self._xtr_top_k(query_vectors, docs, k, offset)
        self.timings["score_s"] = time.perf_counter() - start
        self.timings["processes"] = jax.process_count()
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
    def _xtr_top_k(self, queries: list[np.ndarray], docs: list[np.ndarray], k: int,
                   offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """XTR over this process's documents (global rows start at `offset`); with several
        processes the per-query-token top-k' lists are merged before scoring."""
        lengths = np.array([len(d) for d in docs], np.int64)
        tokens = np.concatenate([np.zeros((0, self.model.dim), np.float32), *docs])
        owner = np.repeat(np.arange(len(docs)), lengths) + offset
        k_prime = min(self.k_prime, max(1, self._corpus_tokens(len(tokens))))
        chunk = max(1, min(self.token_chunk, len(tokens)))
        padded = -(-len(tokens) // chunk) * chunk if len(tokens) else chunk
        token_pad = np.zeros((padded, self.model.dim), np.float32)
        token_pad[: len(tokens)] = tokens
        owner_pad = np.full(padded, -1, np.int32)
        owner_pad[: len(tokens)] = owner
        token_pad = jnp.asarray(token_pad.reshape(-1, chunk, self.model.dim))
        owner_pad = jnp.asarray(owner_pad.reshape(-1, chunk))
        padded_queries, _ = self._padded_queries(queries)   # one compiled shape for all queries
        width = padded_queries.shape[1]
        sims = np.full((len(queries), width, k_prime), -np.inf, np.float32)
        hits = np.full((len(queries), width, k_prime), -1, np.int64)
        for qi, q in enumerate(queries):
            if len(q) == 0:
                continue
            s, h = _token_top_k(jnp.asarray(padded_queries[qi]), token_pad, owner_pad, k_prime)
            sims[qi], hits[qi] = np.asarray(s), np.asarray(h)
        if jax.process_count() > 1:  # each query token's global top-k' from the local ones
            parts = list(zip(allgather_arrays(sims), allgather_arrays(hits)))
            flat = [(s.reshape(-1, k_prime), h.reshape(-1, k_prime)) for s, h in parts]
            merged_s, merged_h = merge_top_k(flat, k_prime)
            sims = merged_s.reshape(sims.shape)
            hits = merged_h.reshape(hits.shape)
        best_ids = np.full((len(queries), k), -1, np.int64)
        best = np.full((len(queries), k), -np.inf, np.float32)
        for qi, q in enumerate(queries):
            if len(q) == 0:
                continue
            candidates, scores = xtr_score_candidates(sims[qi][:len(q)], hits[qi][:len(q)],
                                                      len(q))
            top = np.argsort(-scores, kind="stable")[:k]
            best_ids[qi, : len(top)] = candidates[top]
            best[qi, : len(top)] = scores[top]
        return best_ids, best

    @staticmethod
    def _corpus_tokens(local_tokens: int) -> int:
        """Tokens of the whole corpus (every process's), which caps k'."""
        if jax.process_count() == 1:
            return local_tokens
        return int(sum(int(n) for n in allgather_arrays(np.asarray(local_tokens))))


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


def gather_ragged(vectors: list[np.ndarray], dim: int) -> list[np.ndarray]:
    """Every process's list of [n_i, dim] arrays, concatenated in process order."""
    if jax.process_count() == 1:
        return vectors
    lengths = np.array([len(v) for v in vectors], np.int64)
    flat = np.concatenate([np.zeros((0, dim), np.float32), *vectors])
    out: list[np.ndarray] = []
    for part_lengths, part in zip(allgather_arrays(lengths), allgather_arrays(flat)):
        out += np.split(part, np.cumsum(part_lengths)[:-1]) if len(part_lengths) else []
    return out
