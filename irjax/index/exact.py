"""Exact inner-product search in JAX: the ground truth that approximate indexes are measured
against, and fast enough on an accelerator to be the default for modest corpora.

Memory stays bounded: queries are processed in fixed-size blocks, and for each block a `lax.scan`
walks the corpus in fixed-size chunks, keeping a running top-k. Only a [query_chunk, corpus_chunk]
score tile ever exists, never the full [num_queries, num_docs] matrix. All shapes are fixed per
index, so repeated searches reuse one compiled program instead of recompiling per call.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from irjax.index.base import Index, IndexIntegrityError, register_index

VECTORS_NAME = "vectors.npy"
# Row counts are rounded up to this when a corpus fits in one chunk, so small corpora of similar
# size share a compiled program without wasting a full default-sized chunk on padding.
_ROW_ALIGN = 128


@functools.partial(jax.jit, static_argnames=("k",))
def top_k_over_chunks(queries: jax.Array, chunks: jax.Array, num_valid: jax.Array,
                      k: int) -> tuple[jax.Array, jax.Array]:
    """Exact top-k of queries [q, d] against corpus chunks [c, chunk, d].

    Rows at or beyond `num_valid` are padding and score -inf so they can never be returned (the
    caller guarantees k <= num_valid). Ties keep the lower corpus row first.
    """
    num_queries = queries.shape[0]
    _, chunk_size, _ = chunks.shape
    per_chunk = min(k, chunk_size)

    def step(carry, chunk_and_offset):
        best_scores, best_rows = carry
        chunk, offset = chunk_and_offset
        # HIGHEST keeps a true float32 matmul on GPU/TPU, where the default may use bf16/tf32.
        scores = jnp.matmul(queries, chunk.T, precision=jax.lax.Precision.HIGHEST)
        rows = offset + jnp.arange(chunk_size, dtype=jnp.int32)
        scores = jnp.where(rows[None, :] < num_valid, scores, -jnp.inf)
        chunk_scores, chunk_pos = jax.lax.top_k(scores, per_chunk)
        # Running results come first: they hold lower rows, so ties resolve to the earlier row.
        merged_scores = jnp.concatenate([best_scores, chunk_scores], axis=1)
        merged_rows = jnp.concatenate([best_rows, chunk_pos + offset], axis=1)
        top_scores, pos = jax.lax.top_k(merged_scores, k)
        return (top_scores, jnp.take_along_axis(merged_rows, pos, axis=1)), None

    init = (jnp.full((num_queries, k), -jnp.inf, dtype=jnp.float32),
            jnp.full((num_queries, k), -1, dtype=jnp.int32))
    offsets = jnp.arange(chunks.shape[0], dtype=jnp.int32) * chunk_size
    (scores, rows), _ = jax.lax.scan(step, init, (chunks, offsets))
    return scores, rows


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _next_power_of_two(value: int) -> int:
    return 1 << max(0, (value - 1).bit_length())


@register_index
class ExactIndex(Index):
    """Brute-force search; results are exact up to float32 rounding."""

    kind = "exact"
    required_files = (VECTORS_NAME,)

    def __init__(self, metric: str = "dot", corpus_chunk_size: int = 8192,
                 query_chunk_size: int = 256) -> None:
        super().__init__(metric)
        for name, value in (("corpus_chunk_size", corpus_chunk_size),
                            ("query_chunk_size", query_chunk_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.corpus_chunk_size = corpus_chunk_size
        self.query_chunk_size = query_chunk_size
        self._chunks: jax.Array | None = None
        self._count = 0

    def options(self) -> dict[str, Any]:
        return {"corpus_chunk_size": self.corpus_chunk_size,
                "query_chunk_size": self.query_chunk_size}

    def build_params(self) -> dict[str, Any]:
        assert self._chunks is not None
        return {"effective_corpus_chunk_size": int(self._chunks.shape[1]),
                "num_corpus_chunks": int(self._chunks.shape[0])}

    def _build(self, vectors: np.ndarray) -> None:
        count, dim = vectors.shape
        chunk = min(self.corpus_chunk_size, _round_up(count, _ROW_ALIGN))
        num_chunks = -(-count // chunk)
        padded = np.zeros((num_chunks * chunk, dim), dtype=np.float32)
        padded[:count] = vectors
        # Only the device copy is kept; save() reads it back rather than holding a second copy.
        self._chunks = jnp.asarray(padded.reshape(num_chunks, chunk, dim))
        self._count = count

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self._chunks is not None
        num_queries = queries.shape[0]
        # Small batches use a power-of-two block so padding waste is bounded while the number of
        # distinct compiled shapes stays logarithmic.
        block = min(self.query_chunk_size, _next_power_of_two(num_queries))
        scores = np.empty((num_queries, k), dtype=np.float32)
        rows = np.empty((num_queries, k), dtype=np.int64)
        num_valid = jnp.asarray(self._count, dtype=jnp.int32)
        for start in range(0, num_queries, block):
            part = queries[start:start + block]
            if part.shape[0] < block:
                part = np.concatenate(
                    [part, np.zeros((block - part.shape[0], part.shape[1]), np.float32)])
            s, r = top_k_over_chunks(jnp.asarray(part), self._chunks, num_valid, k=k)
            stop = min(start + block, num_queries)
            scores[start:stop] = np.asarray(s)[:stop - start]
            rows[start:stop] = np.asarray(r)[:stop - start]
        return scores, rows

    def vectors(self) -> np.ndarray:
        """The indexed vectors [n, d] as float32 (normalised if metric is cosine)."""
        self._require_built()
        assert self._chunks is not None
        return np.asarray(self._chunks).reshape(-1, self._chunks.shape[2])[:self._count]

    def _save_data(self, directory: Path) -> None:
        np.save(directory / VECTORS_NAME, self.vectors(), allow_pickle=False)

    def _load_data(self, directory: Path, manifest: dict[str, Any]) -> tuple[int, int]:
        path = directory / VECTORS_NAME
        try:
            vectors = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise IndexIntegrityError(f"{path} is not a readable .npy array ({e})") from e
        if vectors.ndim != 2 or vectors.dtype != np.float32:
            raise IndexIntegrityError(f"{path} must hold a float32 [n, d] array, found "
                                      f"{vectors.dtype} {vectors.shape}; rebuild the index")
        self._build(np.ascontiguousarray(vectors))
        return vectors.shape[0], vectors.shape[1]
