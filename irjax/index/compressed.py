"""Post-hoc compressed vector indexes: the same `Index` contract over fewer bytes per document.

codec       codes per document (d dimensions)          search
'float16'   2 d bytes                                  exact inner products on the decoded rows
'int8'      d + 4 bytes (per-row scale)                exact inner products on the decoded rows
'pq'        m bytes (faiss IndexPQ, m sub-spaces of    asymmetric distance: float query against
            256 centroids each, trained on the corpus)  the centroids of each code
'binary'    d / 8 bytes (sign bits)                     Hamming distance between the query's and
                                                        the document's sign bits (symmetric, as BEBR)
With `rerank=N` the N best candidates by the codes are rescored with the float32 vectors, which are
then stored beside the codes (`rerank_bytes_per_doc`, read only for the candidates, kept on disk
in a real deployment); N >= the corpus size makes any codec exact. `bytes_per_doc` counts the
codes that search scans, the figure the cost/quality table compares.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np

from irjax.index.base import Index, IndexIntegrityError, register_index
from irjax.index.quantization import quantize_int8

CODECS = ("float16", "int8", "pq", "binary")
CODES_NAME, SCALES_NAME, VECTORS_NAME, PQ_NAME = "codes.npy", "scales.npy", "vectors.npy", "pq.faiss"
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)
_HAMMING_BLOCK_BYTES = 1 << 26  # bound on the [queries, docs, bytes] XOR tile


def hamming_distances(query_bits: np.ndarray, doc_bits: np.ndarray) -> np.ndarray:
    """[q, n] number of differing bits between packed uint8 rows, in query blocks of bounded size."""
    out = np.empty((len(query_bits), len(doc_bits)), np.int32)
    block = max(1, _HAMMING_BLOCK_BYTES // max(1, doc_bits.size))
    for start in range(0, len(query_bits), block):
        xor = np.bitwise_xor(query_bits[start:start + block, None, :], doc_bits[None, :, :])
        out[start:start + block] = _POPCOUNT[xor].sum(axis=-1, dtype=np.int32)
    return out


def pack_signs(vectors: np.ndarray) -> np.ndarray:
    """One bit per dimension (1 where the component is > 0), packed 8 to a byte."""
    return np.packbits(vectors > 0, axis=1)


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by descending score, ties to the lower row (as ExactIndex)."""
    n = scores.shape[1]
    k = min(k, n)
    part = (np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n
            else np.tile(np.arange(n), (len(scores), 1)))
    return top_k_of_candidates(np.take_along_axis(scores, part, axis=1), part, k)


@register_index
class CompressedIndex(Index):
    """Vectors stored as float16, int8, PQ or binary codes (module docstring)."""

    kind = "compressed"
    required_files = (CODES_NAME,)

    def __init__(self, metric: str = "dot", codec: str = "int8", pq_subspaces: int = 48,
                 rerank: int | None = None) -> None:
        super().__init__(metric)
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; choose one of {list(CODECS)}")
        for name, value in (("pq_subspaces", pq_subspaces), ("rerank", rerank)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.codec, self.pq_subspaces, self.rerank = codec, pq_subspaces, rerank
        self._codes: np.ndarray | None = None
        self._scales: np.ndarray | None = None
        self._vectors: np.ndarray | None = None  # float32 rows for reranking
        self._pq: Any = None

    def options(self) -> dict[str, Any]:
        return {"codec": self.codec, "pq_subspaces": self.pq_subspaces, "rerank": self.rerank}

    @property
    def bytes_per_doc(self) -> float:
        """Bytes of codes search scans per document (scales included for int8)."""
        assert self._codes is not None
        return self._codes.shape[1] * self._codes.itemsize + (4 if self.codec == "int8" else 0)

    @property
    def rerank_bytes_per_doc(self) -> int:
        return 0 if self._vectors is None else 4 * self._vectors.shape[1]

    def build_params(self) -> dict[str, Any]:
        return {"bytes_per_doc": self.bytes_per_doc,
                "rerank_bytes_per_doc": self.rerank_bytes_per_doc}

    def _build(self, vectors: np.ndarray) -> None:
        d = vectors.shape[1]
        if self.codec == "float16":
            self._codes = vectors.astype(np.float16)
        elif self.codec == "int8":
            self._codes, self._scales = quantize_int8(vectors)
        elif self.codec == "binary":
            self._codes = pack_signs(vectors)
        else:
            if d % self.pq_subspaces:
                raise ValueError(f"pq_subspaces={self.pq_subspaces} must divide the dimension {d}")
            if len(vectors) < 256:
                raise ValueError(f"PQ trains 256 centroids per sub-space and needs >= 256 vectors; "
                                 f"got {len(vectors)} (use codec='int8' for small corpora)")
            self._pq = faiss.IndexPQ(d, self.pq_subspaces, 8, faiss.METRIC_INNER_PRODUCT)
            self._pq.train(vectors)
            self._pq.add(vectors)
            self._codes = faiss.vector_to_array(self._pq.codes).reshape(len(vectors), -1)
        if self.rerank is not None:
            self._vectors = vectors

    def _code_scores(self, queries: np.ndarray) -> np.ndarray:
        """[q, n] scores by the codes alone (higher is better)."""
        assert self._codes is not None
        if self.codec == "float16":
            return queries @ self._codes.astype(np.float32).T
        if self.codec == "int8":
            assert self._scales is not None
            return (queries @ self._codes.astype(np.float32).T) * self._scales[None, :]
        if self.codec == "binary":
            return -hamming_distances(pack_signs(queries), self._codes).astype(np.float32)
        # IndexPQ's search is exhaustive asymmetric scoring; asking for every row gives them all.
        distances = np.empty((len(queries), len(self._codes)), np.float32)
        scores, rows = self._pq.search(queries, len(self._codes))
        np.put_along_axis(distances, rows, scores, axis=1)
        return distances

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return top_k_with_rerank(self._code_scores(queries), queries, self._vectors, self.rerank, k)

    def _save_data(self, directory: Path) -> None:
        assert self._codes is not None
        np.save(directory / CODES_NAME, self._codes)
        if self._scales is not None:
            np.save(directory / SCALES_NAME, self._scales)
        if self._vectors is not None:
            np.save(directory / VECTORS_NAME, self._vectors)
        if self._pq is not None:
            faiss.write_index(self._pq, str(directory / PQ_NAME))

    def _load_data(self, directory: Path, manifest: dict[str, Any]) -> tuple[int, int]:
        needed = {"int8": [SCALES_NAME], "pq": [PQ_NAME]}.get(self.codec, [])
        needed += [VECTORS_NAME] if self.rerank is not None else []
        missing = [name for name in needed if name not in manifest["files"]]
        if missing:
            raise IndexIntegrityError(f"{directory} lacks {missing} for codec {self.codec!r}; "
                                      "rebuild the index")
        self._codes = np.load(directory / CODES_NAME, allow_pickle=False)
        if self.codec == "int8":
            self._scales = np.load(directory / SCALES_NAME, allow_pickle=False)
        if self.rerank is not None:
            self._vectors = np.load(directory / VECTORS_NAME, allow_pickle=False)
        if self.codec == "pq":
            self._pq = faiss.read_index(str(directory / PQ_NAME))
        dim = {"float16": self._codes.shape[1], "int8": self._codes.shape[1],
               "binary": manifest["dimension"], "pq": getattr(self._pq, "d", -1)}[self.codec]
        return len(self._codes), int(dim)


def top_k_with_rerank(code_scores: np.ndarray, queries: np.ndarray, vectors: np.ndarray | None,
                      rerank: int | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top k by the codes' scores or, with `rerank`, the best `rerank` by the codes rescored with the
    float32 `vectors` (shared by every code index that keeps the vectors for a rerank)."""
    if rerank is None:
        return top_k_rows(code_scores, k)
    assert vectors is not None
    _, candidates = top_k_rows(code_scores, max(k, min(rerank, code_scores.shape[1])))
    exact = np.einsum("qd,qnd->qn", queries, vectors[candidates])
    return top_k_of_candidates(exact, candidates, k)


def top_k_of_candidates(scores: np.ndarray, candidates: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Top k of reranked candidate scores, as corpus rows, ties to the lower corpus row."""
    order = np.lexsort((candidates, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(candidates, order, axis=1)
